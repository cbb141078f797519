//! The birthday search (`wzp_proto::direct_path::BirthdayHalf`): which half
//! each side takes, read from the relay's view of both, and the shell of
//! the two halves: the searching side's sockets and its dial from the one
//! a probe came through on, the spraying side's rounds of probes.

use super::*;

/// The half the peer takes, as its shared addresses tell: its own address
/// towards its relay carries its socket's port, so a relay-observed port
/// `peer_addr` other than that one is a NAT that moved it (the peer
/// searches). A peer that shared no IPv4 address of its own was seen by
/// its relay at its own address (no NAT: it would spray). A peer whose
/// relay saw its mapping test come from `peer_addr` (`independent`: its NAT
/// keeps one mapping for every destination, `wzp_proto::mapping`) sprays
/// even where its port moved: the address is where its packets to us come
/// from too.
pub(super) fn peer_half_of(
    peer_addr: SocketAddr,
    peer_local: &[SocketAddr],
    independent: bool,
) -> BirthdayHalf {
    let socket_port = peer_local
        .iter()
        .find(|a| canonical(**a).is_ipv4())
        .map(SocketAddr::port);
    match socket_port {
        Some(port) if port != peer_addr.port() && !independent => BirthdayHalf::Search,
        _ => BirthdayHalf::Spray,
    }
}

/// Whether a side whose mapping test showed `mapping` counts as keeping one
/// mapping for the birthday search, `a` and `b` being the two sides'
/// results ([`DirectPath::counts_independent`]): only with both tested.
pub(super) fn counts_independent(mapping: Mapping, a: Mapping, b: Mapping) -> bool {
    a.is_known() && b.is_known() && mapping == Mapping::Independent
}

/// Whether a side taking `own` meets a peer taking `peer`: a search needs
/// the other side's probes to come through on one of its sockets, a spray
/// a searching peer to dial in from one. Two searching sides (both NATs
/// pick a port per destination) never meet; two spraying ones (both
/// ports kept) have had their plain attempt, which a birthday search
/// would not improve on, and would only send thousands of probes.
pub(super) fn birthday_pairs(own: BirthdayHalf, peer: BirthdayHalf) -> bool {
    own != peer
}

/// [`DirectPath::birthday_half`] for a side the relay saw at `own`, its
/// signalling socket bound at `local`, able to send probes from it or not,
/// whose NAT showed one mapping for every destination (`independent`, the
/// mapping test) or did not. A moved port with one mapping is as good as a
/// kept one: the peer knows where this side's packets come from.
pub(crate) fn birthday_half_for(
    own: SocketAddr,
    local: SocketAddr,
    can_spray: bool,
    independent: bool,
) -> Option<BirthdayHalf> {
    if own.port() != local.port() && !independent {
        Some(BirthdayHalf::Search)
    } else if can_spray {
        Some(BirthdayHalf::Spray)
    } else {
        None
    }
}

/// The searching half of a birthday search (`wzp_proto::direct_path`), a
/// dialer's or an acceptor's:
/// [`BIRTHDAY_SOCKETS`] sockets, each probing the peer's address every
/// [`BIRTHDAY_PROBE_EVERY_MS`] (each a mapping of its own through a NAT
/// that maps every destination anew), until a probe of the peer's comes
/// through on one, at most [`BIRTHDAY_WAIT_MS`]; then a dial from that
/// socket, proven as any. The endpoint made on it carries the path.
pub(super) async fn birthday_dial(
    plan: &DirectPath,
    identity: &Identity,
) -> std::result::Result<(quinn::Endpoint, quinn::Connection), String> {
    let Some(peer) = plan.peer_addr.map(canonical) else {
        return Err("no address to search towards".into());
    };
    let cfg = quic::direct_client_config().map_err(|e| format!("{e:#}"))?;
    let every = Duration::from_millis(BIRTHDAY_PROBE_EVERY_MS);
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..BIRTHDAY_SOCKETS {
        // Short of descriptors, the search goes on with the sockets open.
        let Ok(socket) = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).await
        else {
            break;
        };
        probes.spawn(async move {
            let mut buf = [0u8; 64];
            let mut next = tokio::time::Instant::now();
            loop {
                if tokio::time::Instant::now() >= next {
                    let _ = socket.send_to(PROBE, peer).await;
                    next += every;
                }
                match tokio::time::timeout_at(next, socket.recv_from(&mut buf)).await {
                    Ok(Ok((_, from))) if canonical(from) == peer => return socket,
                    Ok(Err(_)) => tokio::time::sleep_until(next).await,
                    _ => {}
                }
            }
        });
    }
    if probes.is_empty() {
        return Err("birthday search: no socket could be opened".into());
    }
    let wait = Duration::from_millis(BIRTHDAY_WAIT_MS);
    let socket = match tokio::time::timeout(wait, probes.join_next()).await {
        Ok(Some(Ok(socket))) => socket,
        Ok(_) => return Err("birthday search: the probes stopped".into()),
        Err(_) => {
            return Err(format!(
                "birthday search: none of {} sockets heard {peer} within {} s",
                probes.len(),
                wait.as_secs()
            ))
        }
    };
    // The other sockets close here, before the dial.
    drop(probes);
    let socket = socket
        .into_std()
        .map_err(|e| format!("birthday search: {e}"))?;
    let endpoint = quic::client_endpoint_on(socket).map_err(|e| format!("birthday search: {e}"))?;
    let connecting = endpoint
        .connect_with(cfg, peer, &plan.room)
        .map_err(|e| format!("birthday search: dialing: {e}"))?;
    let conn = match tokio::time::timeout(ATTEMPT, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(format!("birthday search: {peer}: {e}")),
        Err(_) => {
            return Err(format!(
                "birthday search: {peer}: no answer within {} s",
                ATTEMPT.as_secs()
            ))
        }
    };
    match tokio::time::timeout(ATTEMPT, prove_dialed(plan, identity, &conn)).await {
        Ok(Ok(())) => Ok((endpoint, conn)),
        Ok(Err(e)) => Err(format!("birthday search: {peer}: {e:#}")),
        Err(_) => Err(format!(
            "birthday search: {peer}: no proof within {} s",
            ATTEMPT.as_secs()
        )),
    }
}

/// The ports of this call's spray rounds, seeded from the OS.
pub(super) fn spray_ports() -> SprayPorts {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        // Any seed spreads the ports; this one differs per call.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        seed = (u64::from(std::process::id()) ^ now).to_le_bytes();
    }
    SprayPorts::new(u64::from_le_bytes(seed))
}

/// One round of birthday probes: [`SPRAY_PORTS`] ports of the address the
/// relay saw the peer at, [`SPRAY_BATCH`] every [`SPRAY_BATCH_EVERY_MS`],
/// from the signalling socket (each opens this side's NAT for replies from
/// there); stops early when the path comes up. From the first round on, a
/// dial from any port of that address is taken (a caller's endpoint opens
/// to dials for it).
pub(super) async fn spray_round(plan: &DirectPath, ports: &mut SprayPorts, route: &Route) {
    let (Some(raw), Some(peer)) = (plan.raw.as_ref(), plan.peer_addr.map(canonical)) else {
        return;
    };
    if !plan.sprayed.swap(true, Ordering::Relaxed)
        && plan.role == Role::Dialer
        && open_to_dialer(&plan.endpoint).is_err()
    {
        // Nothing could come in: no probes (the next round tries again).
        plan.sprayed.store(false, Ordering::Relaxed);
        return;
    }
    let mut sent = 0;
    while sent < SPRAY_PORTS && !route.direct_up() {
        for port in ports.by_ref().take(SPRAY_BATCH as usize) {
            // A full socket buffer drops a probe: one port fewer.
            let _ = raw.send_to(PROBE, SocketAddr::new(peer.ip(), port));
        }
        sent += SPRAY_BATCH;
        tokio::time::sleep(Duration::from_millis(SPRAY_BATCH_EVERY_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_peers_half_is_read_from_its_shared_socket_port_and_only_opposite_halves_search() {
        use BirthdayHalf::{Search, Spray};
        let peer = a("10.0.2.2:40000");
        // (the peer's own addresses, the half it takes)
        let cases: [(&[&str], BirthdayHalf); 6] = [
            // Its socket's port is the one its relay saw: kept.
            (&["192.168.2.2:40000"], Spray),
            (&["[::ffff:192.168.2.2]:40000"], Spray),
            // Another port: its NAT moved it.
            (&["192.168.2.2:51000"], Search),
            (&["[2001:db8:b::2]:51000", "192.168.2.2:51000"], Search),
            // No IPv4 address of its own: its relay saw it at its own.
            (&["[2001:db8:b::2]:51000"], Spray),
            (&[], Spray),
        ];
        for (local, want) in cases {
            let local: Vec<SocketAddr> = local.iter().map(|s| a(s)).collect();
            assert_eq!(peer_half_of(peer, &local, false), want, "{local:?}");
            // A peer whose relay saw one mapping for every destination
            // sprays, its port moved or not.
            assert_eq!(peer_half_of(peer, &local, true), Spray, "{local:?}");
        }
        // (this side's half, the peer's, whether a search runs)
        for (own, theirs, pairs) in [
            (Search, Spray, true),
            (Spray, Search, true),
            // Two NATs that move ports never meet; two that keep them
            // had their plain attempt.
            (Search, Search, false),
            (Spray, Spray, false),
        ] {
            assert_eq!(birthday_pairs(own, theirs), pairs, "{own:?} {theirs:?}");
        }
    }

    /// Each side's own half is the half the other reads for it, whatever
    /// the two tests showed (one untested: an older build, whose reading
    /// of a moved port is searching), so the two never disagree on who
    /// searches; and a carrier-grade NAT that keeps its mapping sprays at
    /// a symmetric one only when both were tested.
    #[test]
    fn both_sides_read_the_same_halves_from_both_tests() {
        use Mapping::{Dependent, Independent, Unknown};
        let local = a("[::]:40000");
        let observed = |moved: bool| {
            a(if moved {
                "10.0.1.2:51000"
            } else {
                "10.0.1.2:40000"
            })
        };
        let shared = [a("192.168.1.2:40000")];
        for moved_a in [false, true] {
            for moved_b in [false, true] {
                for ma in [Unknown, Independent, Dependent] {
                    for mb in [Unknown, Independent, Dependent] {
                        // A's own half, and B's reading of A's.
                        let own_a = birthday_half_for(
                            observed(moved_a),
                            local,
                            true,
                            counts_independent(ma, ma, mb),
                        );
                        let read_a = peer_half_of(
                            observed(moved_a),
                            &shared,
                            counts_independent(ma, mb, ma),
                        );
                        let case = format!("A moved {moved_a} {ma:?}, B moved {moved_b} {mb:?}");
                        assert_eq!(own_a, Some(read_a), "{case}");
                        // An untested side is read as before the test.
                        if !ma.is_known() || !mb.is_known() {
                            let before = if moved_a {
                                BirthdayHalf::Search
                            } else {
                                BirthdayHalf::Spray
                            };
                            assert_eq!(read_a, before, "{case}");
                        }
                    }
                }
            }
        }
        // The case the test is for: A's port moved, one mapping; B symmetric.
        assert_eq!(
            birthday_half_for(
                observed(true),
                local,
                true,
                counts_independent(Independent, Independent, Dependent)
            ),
            Some(BirthdayHalf::Spray)
        );
        // ... and with B untested (an older build) A searches, as B reads it.
        assert_eq!(
            birthday_half_for(
                observed(true),
                local,
                true,
                counts_independent(Independent, Independent, Unknown)
            ),
            Some(BirthdayHalf::Search)
        );
    }

    #[test]
    fn a_side_whose_nat_moved_its_port_searches_and_one_whose_port_was_kept_sprays() {
        let local = a("[::]:40000");
        let cases = [
            // A NAT that picked another port: most likely anew for every
            // destination.
            ("10.0.1.2:51234", true, Some(BirthdayHalf::Search)),
            ("10.0.1.2:51234", false, Some(BirthdayHalf::Search)),
            // The port kept (a home router's NAT, or none).
            ("10.0.1.2:40000", true, Some(BirthdayHalf::Spray)),
            ("[::ffff:10.0.1.2]:40000", true, Some(BirthdayHalf::Spray)),
            // ... but no socket to send the probes from.
            ("10.0.1.2:40000", false, None),
        ];
        for (own, can_spray, want) in cases {
            assert_eq!(
                birthday_half_for(a(own), local, can_spray, false),
                want,
                "{own} {can_spray}"
            );
        }
        // A NAT that moved the port but showed one mapping for every
        // destination (a carrier-grade NAT as RFC 6888 asks): the peer
        // knows where this side's packets come from, so it sprays.
        let cases = [
            ("10.0.1.2:51234", true, Some(BirthdayHalf::Spray)),
            ("10.0.1.2:51234", false, None),
            ("10.0.1.2:40000", true, Some(BirthdayHalf::Spray)),
        ];
        for (own, can_spray, want) in cases {
            assert_eq!(
                birthday_half_for(a(own), local, can_spray, true),
                want,
                "{own} {can_spray}"
            );
        }
    }
}
