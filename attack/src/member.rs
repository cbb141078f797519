//! A malicious member: it holds the room secret (a member can always share
//! it), so it computes a valid admission proof, joins, and then turns
//! against the room. The proof and the Join signature come from
//! `wzp-proto`'s pure crypto helpers (`RoomAdmissionKey`,
//! `join_signed_bytes`, `Seed::identity`): that is what holding the secret
//! means. Everything else (the frames, their JSON, the stream, the QUIC
//! connection, reading the admission) is written here from docs/WIRE.md §7.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wzp_proto::join::{join_signed_bytes, RoomAdmissionKey};
use wzp_proto::{Seed, TlsFingerprint};

use crate::quic;
use crate::wire::{self, hex};

/// A member admitted to a room: its endpoint and connection. Its signal
/// stream is drained in the background (room updates, pongs) so the
/// relay's writer never waits on it.
pub struct Member {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    /// The member's end of its signal stream, for more frames.
    pub send: quinn::SendStream,
    /// How long from the first packet of the handshake to the room update
    /// that admitted it.
    pub join_time: Duration,
}

/// Joins room `room` (plain name) with `secret` as the identity from
/// `seed`, at the relay on `relay` whose TLS fingerprint is `relay_fp`.
pub async fn join(
    relay: SocketAddr,
    relay_fp: &TlsFingerprint,
    room: &str,
    secret: &str,
    seed: [u8; 32],
) -> Result<Member, String> {
    let started = Instant::now();
    let key = RoomAdmissionKey::derive(secret.as_bytes(), room);
    let sni = key.sni();
    let endpoint = quic::endpoint().map_err(|e| format!("attacker endpoint: {e}"))?;
    let conn = quic::connect(&endpoint, relay, &sni).await?;
    let nonce = quic::join_nonce(&conn).ok_or("the TLS session exports no nonce")?;
    let id = Seed::from_bytes(seed).identity();
    let identity_pub = id.public_key();
    let ts = wire::unix_ms();
    let signature = id.sign(&join_signed_bytes(&sni, relay_fp, &identity_pub, ts));
    let proof = key.prove(&nonce, relay_fp, &identity_pub);
    let join = wire::signal_frame(&serde_json::json!({
        "type": "join",
        "room": sni,
        "identity_pub": hex(&identity_pub),
        "alias": "mallory",
        "timestamp_ms": ts,
        "signature": hex(&signature),
        "room_proof": {
            "room_pub": hex(&proof.room_pub),
            "signature": hex(&proof.signature),
        },
    }));
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| format!("open the signal stream: {e}"))?;
    send.write_all(&[wire::hello_frame(), join].concat())
        .await
        .map_err(|e| format!("write hello and join: {e}"))?;
    let admitted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match wire::read_frame(&mut recv, 1 << 20).await {
                Ok(Some(f)) if f["type"] == "room_update" => return Ok(()),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("the relay ended the signal stream".to_string()),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match admitted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let why = conn
                .close_reason()
                .map(|c| match quic::peer_close(&c) {
                    Some((code, reason)) => format!("closed {code:#x}: {reason}"),
                    None => c.to_string(),
                })
                .unwrap_or_default();
            return Err(format!("not admitted: {e} {why}"));
        }
        Err(_) => return Err("no room update within 10 s".into()),
    }
    let join_time = started.elapsed();
    // The relay sends a member the room's media once a datagram of its own
    // has arrived, or 2 s after its join (WIRE.md §6.5), as a client is
    // heard by the media it sends from its admission on: one header-only
    // datagram, under an id of its own (bound to it, or refused as another's:
    // either way it is heard). From the relay's next cycle on, the member
    // reads the room's media.
    let own_id = u32::from_be_bytes([seed[0], seed[1], seed[2], seed[3]]);
    conn.send_datagram(wire::media_header(own_id, 0, 0, 0).to_vec().into())
        .map_err(|e| format!("send the first datagram: {e}"))?;
    tokio::spawn(
        async move { while let Ok(Some(_)) = wire::read_frame(&mut recv, 1 << 20).await {} },
    );
    Ok(Member {
        endpoint,
        conn,
        send,
        join_time,
    })
}
