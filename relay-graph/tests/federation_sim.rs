//! A hundred federation cores in one process on a seeded random connected
//! topology, links stepped with a manual clock (50 ms per round): presence
//! and global rooms converge within a bounded number of rounds, messages stay
//! bounded (no loops), routes are BFS shortest paths, media arrives exactly
//! once, a voice message's key query reaches every relay once, and a dead
//! relay's participants vanish within 15 s.
//!
//! The figures printed (`--nocapture`) are those in docs/FEDERATION.md.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wzp_proto::federation::RoomId;
use wzp_proto::Fingerprint;
use wzp_relay::federation::mesh::{id_of, Mesh};
use wzp_relay::federation::{Input, Route};

const RELAYS: usize = 100;
const USERS_PER_RELAY: usize = 10;

/// A spanning tree (each relay links to a random earlier one) plus random
/// extra links: connected, cycles included.
fn topology(n: usize, extra: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut edges = BTreeSet::new();
    for i in 1..n {
        let j = rng.random_range(0..i);
        edges.insert((j, i));
    }
    while edges.len() < n - 1 + extra {
        let a = rng.random_range(0..n);
        let b = rng.random_range(0..n);
        if a != b {
            edges.insert((a.min(b), a.max(b)));
        }
    }
    edges.into_iter().collect()
}

fn bfs(n: usize, edges: &[(usize, usize)], from: usize) -> Vec<Option<usize>> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
        adj[b].push(a);
    }
    let mut dist = vec![None; n];
    dist[from] = Some(0);
    let mut q = VecDeque::from([from]);
    while let Some(u) = q.pop_front() {
        for &v in &adj[u] {
            if dist[v].is_none() {
                dist[v] = Some(dist[u].unwrap() + 1);
                q.push_back(v);
            }
        }
    }
    dist
}

fn user(relay: usize, k: usize) -> Fingerprint {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(relay as u64).to_be_bytes());
    b[8..].copy_from_slice(&(k as u64).to_be_bytes());
    Fingerprint(b)
}

fn general() -> RoomId {
    RoomId::of_name("general")
}

#[test]
fn a_hundred_relays_converge_on_shortest_routes_without_loops() {
    let started = Instant::now();
    let edges = topology(RELAYS, RELAYS / 2, 0x5eed);
    let directed = 2 * edges.len() as u64;
    let dist: Vec<Vec<Option<usize>>> = (0..RELAYS).map(|s| bfs(RELAYS, &edges, s)).collect();
    let diameter = dist
        .iter()
        .flatten()
        .map(|d| d.expect("connected"))
        .max()
        .unwrap();
    let mut m = Mesh::new(RELAYS, &edges, &[general()], 42);

    // Links come up.
    let (link_rounds, _) = m.settle(100).expect("links settle");
    for i in 0..RELAYS {
        for p in m.cores[i].peers() {
            assert_eq!(
                p.status,
                wzp_relay::federation::LinkStatus::Up,
                "{i} -> {}",
                p.label
            );
        }
    }

    // Every relay registers its users at once.
    let before = m.presence_entries;
    let origins_before = m.origin_entries;
    for i in 0..RELAYS {
        for k in 0..USERS_PER_RELAY {
            m.input(
                i,
                Input::LocalPresence {
                    fingerprint: user(i, k),
                    online: true,
                },
            );
        }
    }
    let (presence_rounds, presence_msgs) = m.settle(200).expect("presence settles");
    // A version 6 mesh speaks `presence_origins` only: a route to each
    // relay a user is on (here one each).
    assert_eq!(
        m.presence_entries - before,
        0,
        "no presence_update between version 6 relays"
    );
    let entries = m.origin_entries - origins_before;
    let keys = (RELAYS * USERS_PER_RELAY) as u64;
    // Synchronous rounds deliver shortest paths first, so a route is
    // announced about once per directed link; ties broken later and
    // withdrawals towards the next hop at most double it. A loop would not
    // stay within any bound.
    assert!(
        entries <= 2 * keys * directed,
        "{entries} presence entries for {keys} users over {directed} directed links"
    );
    assert!(
        presence_rounds <= diameter + 3,
        "presence took {presence_rounds} rounds, diameter {diameter}"
    );

    // Routes are BFS shortest paths, along real links, to the right relay.
    let edge_set: BTreeSet<(usize, usize)> = edges.iter().copied().collect();
    for (s, row) in dist.iter().enumerate() {
        for (t, d) in row.iter().enumerate() {
            let want = d.unwrap();
            let route = m.cores[s].route(&user(t, 3));
            let path: Vec<usize> = match &route {
                Route::Local => vec![],
                Route::DirectPeer(p) => vec![m.index_of(*p).unwrap()],
                Route::Via(v) => v.iter().map(|p| m.index_of(*p).unwrap()).collect(),
                Route::NotFound => panic!("{s} has no route to {t}'s user"),
            };
            assert_eq!(path.len(), want, "{s} -> {t}: {route:?}");
            assert_eq!(path.last().copied().unwrap_or(s), t);
            let mut at = s;
            for &hop in &path {
                assert!(
                    edge_set.contains(&(at.min(hop), at.max(hop))),
                    "{s} -> {t}: {path:?}"
                );
                at = hop;
            }
        }
        assert_eq!(m.cores[s].presence().len(), RELAYS * USERS_PER_RELAY);
        assert_eq!(m.cores[s].origins_of(&user(s / 2, 7)), [id_of(s / 2)]);
    }

    // A global room with two members on every third relay.
    let holders: Vec<usize> = (0..RELAYS).step_by(3).collect();
    let room_msgs_before: u64 = m.by_type.get("global_room_active").copied().unwrap_or(0);
    for &i in &holders {
        m.set_room(i, general(), &[user(i, 100), user(i, 101)]);
    }
    let (room_rounds, _) = m.settle(200).expect("rooms settle");
    let room_msgs = m.by_type.get("global_room_active").copied().unwrap_or(0) - room_msgs_before;
    assert!(
        room_msgs <= 2 * holders.len() as u64 * directed,
        "{room_msgs} room announcements"
    );
    for i in 0..RELAYS {
        let remote = m.cores[i].remote_participants(general());
        let own = if holders.contains(&i) { 2 } else { 0 };
        assert_eq!(remote.len(), 2 * holders.len() - own, "relay {i}");
    }

    // Media from three senders: every relay with members gets each packet
    // exactly once, none missing.
    let senders = [holders[0], holders[5], holders[holders.len() - 1]];
    let packets = 50u32;
    for seq in 0..packets {
        for (n, &s) in senders.iter().enumerate() {
            m.send_media(s, general(), n as u32 + 1, seq);
        }
    }
    let mut duplicates = 0u64;
    for &i in &holders {
        for (n, &s) in senders.iter().enumerate() {
            if s == i {
                continue;
            }
            for seq in 0..packets {
                match m.delivered[i].get(&(id_of(s), n as u32 + 1, seq)) {
                    Some(1) => {}
                    Some(c) => duplicates += u64::from(*c - 1),
                    None => panic!("relay {i} missed {s}'s packet {seq}"),
                }
            }
        }
    }
    assert_eq!(duplicates, 0);
    let dups_dropped: u64 = m.dedup.iter().map(|d| d.stats().duplicates).sum();
    let sent = u64::from(packets) * senders.len() as u64;
    let datagrams_per_packet = m.media_datagrams as f64 / sent as f64;
    // On settled tables each packet follows its origin's shortest-path
    // tree: no relay gets a second copy, and no packet crosses more links
    // than a tree of the mesh has.
    assert_eq!(dups_dropped, 0, "copies over a second path");
    assert!(
        m.media_datagrams <= sent * (RELAYS as u64 - 1),
        "{datagrams_per_packet} link datagrams per packet"
    );

    // A voice message's key query from relay 0 floods the mesh: every
    // other relay hears it exactly once, in diameter rounds, and no link
    // carries it both ways more than once.
    let mail_before = m.by_type.get("mail").copied().unwrap_or(0);
    m.input(
        0,
        Input::LocalMail(wzp_proto::federation::MailSignal {
            path: Vec::new(),
            event: wzp_proto::federation::MailEvent::KeyQuery {
                query: 1,
                who: user(7, 0),
            },
        }),
    );
    let (query_rounds, _) = m.settle(100).expect("the flood ends");
    let query_msgs = m.by_type.get("mail").copied().unwrap_or(0) - mail_before;
    for i in 1..RELAYS {
        let heard = m.mail_delivered[i]
            .iter()
            .filter(|s| matches!(s.event, wzp_proto::federation::MailEvent::KeyQuery { .. }))
            .count();
        assert_eq!(heard, 1, "relay {i} heard the query {heard} times");
    }
    assert!(
        query_msgs <= directed,
        "{query_msgs} messages for one query over {directed} directed links"
    );

    // A relay with members dies: every other relay forgets its members
    // within 15 s of simulated time.
    let victim = holders[holders.len() / 2];
    m.kill(victim);
    let died = m.now;
    let gone = |m: &Mesh, i: usize| {
        !m.cores[i]
            .remote_participants(general())
            .iter()
            .any(|(p, _)| p.fingerprint == user(victim, 100))
    };
    let mut all_gone_after = None;
    for _ in 0..400 {
        m.step();
        if (0..RELAYS).filter(|&i| i != victim).all(|i| gone(&m, i)) {
            all_gone_after = Some(m.now - died);
            break;
        }
    }
    let all_gone_after = all_gone_after.expect("ghost participants past 20 s");
    assert!(
        all_gone_after <= Duration::from_secs(15),
        "{all_gone_after:?}"
    );
    // And its users have no route any more (the mesh stays connected or
    // not; either way nothing points at a dead relay).
    let (after_death_rounds, _) = m.settle(400).expect("settles after the death");
    for i in (0..RELAYS).filter(|&i| i != victim) {
        assert_eq!(
            m.cores[i].route(&user(victim, 0)),
            Route::NotFound,
            "relay {i}"
        );
    }

    let mut degrees = BTreeMap::new();
    for &(a, b) in &edges {
        *degrees.entry(a).or_insert(0) += 1;
        *degrees.entry(b).or_insert(0) += 1;
    }
    println!(
        "federation_sim: {RELAYS} relays, {} links (diameter {diameter}, max degree {}), \
         {USERS_PER_RELAY} users each",
        edges.len(),
        degrees.values().max().unwrap()
    );
    println!("  links up and settled in {link_rounds} rounds");
    println!(
        "  presence: {presence_rounds} rounds (50 ms each), {presence_msgs} messages, \
         {entries} route entries ({:.2} per user per directed link)",
        entries as f64 / (keys * directed) as f64,
    );
    println!(
        "  global room ({} holders): {room_rounds} rounds, {room_msgs} global_room_active",
        holders.len()
    );
    println!(
        "  media: {sent} packets, 0 duplicates delivered, {dups_dropped} duplicate arrivals \
         dropped by dedup, {datagrams_per_packet:.1} link datagrams per packet"
    );
    println!(
        "  voice-message key query: heard once by each of {} relays in {query_rounds} rounds, \
         {query_msgs} messages",
        RELAYS - 1
    );
    println!(
        "  relay death: members gone everywhere after {all_gone_after:?}; re-settled in \
         {after_death_rounds} rounds"
    );
    println!("  wall time {:?}", started.elapsed());
}

/// Every receiver gets every packet of every other sender exactly once:
/// counted at the receiving relay's delivery to its members.
fn exactly_once(edges: &[(usize, usize)], n: usize) {
    let mut m = Mesh::new(n, edges, &[general()], 7);
    m.settle(50).unwrap();
    for i in 0..n {
        m.set_room(i, general(), &[user(i, 0)]);
    }
    m.settle(50).unwrap();
    let packets = 500u32;
    for seq in 0..packets {
        for s in 0..n {
            // Every relay's sender is sender 1: only the origin tells them apart.
            m.send_media(s, general(), 1, seq);
        }
    }
    for r in 0..n {
        for s in (0..n).filter(|&s| s != r) {
            let got: Vec<u32> = (0..packets)
                .map(|seq| {
                    m.delivered[r]
                        .get(&(id_of(s), 1, seq))
                        .copied()
                        .unwrap_or(0)
                })
                .collect();
            let gaps = got.iter().filter(|&&c| c == 0).count();
            let dups: u32 = got.iter().map(|&c| c.saturating_sub(1)).sum();
            assert_eq!((gaps, dups), (0, 0), "{s} -> {r}: gaps, duplicates");
        }
    }
}

#[test]
fn a_chain_delivers_each_packet_exactly_once_through_a_hub() {
    exactly_once(&[(0, 1), (1, 2)], 3);
    // And with nobody on the hub.
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[general()], 8);
    m.settle(50).unwrap();
    m.set_room(0, general(), &[user(0, 0)]);
    m.set_room(2, general(), &[user(2, 0)]);
    m.settle(50).unwrap();
    for seq in 0..100 {
        m.send_media(0, general(), 1, seq);
    }
    assert_eq!(m.delivered[2].len(), 100);
    assert!(m.delivered[2].values().all(|&c| c == 1));
    assert!(
        m.delivered[1].is_empty(),
        "the hub has nobody to deliver to"
    );
}

#[test]
fn a_triangle_delivers_each_packet_exactly_once() {
    exactly_once(&[(0, 1), (1, 2), (0, 2)], 3);
}

#[test]
fn a_mesh_of_five_with_every_link_delivers_each_packet_exactly_once() {
    let edges: Vec<(usize, usize)> = (0..5)
        .flat_map(|a| ((a + 1)..5).map(move |b| (a, b)))
        .collect();
    exactly_once(&edges, 5);
}
