//! A path-vector table: state that belongs to one relay (its participants in
//! a global room, a user registered there) spread to every relay of the mesh
//! along shortest paths, with the path carried so loops are refused.
//!
//! Each key has at most one *local* value (this relay is the origin) and one
//! *learned* entry per peer (what that peer last announced, with its path).
//! The best entry is the local one, else the learned one with the shortest
//! path (ties: the lower peer id). Each up peer is told the best entry with
//! this relay prepended to the path, unless that path already holds the peer
//! (it would refuse it as a loop) or grows past [`MAX_PATH`]; then it is told
//! to withdraw, if it had been told anything. What each peer was told is kept,
//! so only changes travel and a peer that goes down is forgotten at once.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use wzp_proto::federation::{RelayId, MAX_PATH};

/// One announced entry: path from the announcing relay to the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<V> {
    /// Announcer first, origin last.
    pub path: Vec<RelayId>,
    /// The origin's value.
    pub value: V,
}

impl<V> Entry<V> {
    /// The relay the value belongs to.
    pub fn origin(&self) -> RelayId {
        // Paths are never empty: the decoder refuses empty ones and local
        // entries are [me].
        self.path.last().copied().unwrap_or_default()
    }
}

/// What to tell one peer about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta<K, V> {
    /// Announce (or replace) the entry.
    Announce(K, Entry<V>),
    /// The key is no longer reached through us.
    Withdraw(K),
}

/// The table. `K` names the state (a room and origin, a fingerprint).
#[derive(Debug)]
pub struct PathVector<K, V> {
    me: RelayId,
    local: HashMap<K, V>,
    learned: BTreeMap<K, BTreeMap<RelayId, Entry<V>>>,
    /// Per up peer: what it was last told.
    told: BTreeMap<RelayId, HashMap<K, Entry<V>>>,
}

impl<K: Clone + Eq + Hash + Ord, V: Clone + PartialEq> PathVector<K, V> {
    /// An empty table for relay `me`.
    pub fn new(me: RelayId) -> Self {
        PathVector {
            me,
            local: HashMap::new(),
            learned: BTreeMap::new(),
            told: BTreeMap::new(),
        }
    }

    /// The best entry for `key`, path starting with this relay.
    pub fn best(&self, key: &K) -> Option<Entry<V>> {
        if let Some(v) = self.local.get(key) {
            return Some(Entry {
                path: vec![self.me],
                value: v.clone(),
            });
        }
        let (_, e) = self
            .learned
            .get(key)?
            .iter()
            .min_by_key(|(peer, e)| (e.path.len(), **peer))?;
        let mut path = Vec::with_capacity(e.path.len() + 1);
        path.push(self.me);
        path.extend_from_slice(&e.path);
        Some(Entry {
            path,
            value: e.value.clone(),
        })
    }

    /// Every key with a best entry.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.local
            .keys()
            .chain(self.learned.keys().filter(|k| !self.local.contains_key(*k)))
    }

    /// Forgets what `peer` was told of the keys `which` selects, sending it
    /// nothing (it dropped them itself: it no longer bridges their room).
    pub fn forget_told(&mut self, peer: RelayId, which: impl Fn(&K) -> bool) {
        if let Some(told) = self.told.get_mut(&peer) {
            told.retain(|k, _| !which(k));
        }
    }

    /// Whether `peer` is up in this table.
    pub fn is_up(&self, peer: RelayId) -> bool {
        self.told.contains_key(&peer)
    }

    /// Whether `peer` announced `key` (its best path to it avoids us).
    pub fn announced_by(&self, peer: RelayId, key: &K) -> bool {
        self.learned.get(key).is_some_and(|m| m.contains_key(&peer))
    }

    /// What `peer` announced for `key`, if anything.
    pub fn learned_entry(&self, peer: RelayId, key: &K) -> Option<&Entry<V>> {
        self.learned.get(key)?.get(&peer)
    }

    /// What `peer` announced for the keys in `range`.
    pub fn learned_in(
        &self,
        peer: RelayId,
        range: impl std::ops::RangeBounds<K>,
    ) -> impl Iterator<Item = (&K, &Entry<V>)> {
        self.learned
            .range(range)
            .filter_map(move |(k, m)| m.get(&peer).map(|e| (k, e)))
    }

    /// Entries learned from `peer`.
    pub fn learned_from(&self, peer: RelayId) -> impl Iterator<Item = (&K, &Entry<V>)> {
        self.learned
            .iter()
            .filter_map(move |(k, m)| m.get(&peer).map(|e| (k, e)))
    }

    /// Sets (or clears, with `None`) this relay's own value for `key`.
    pub fn set_local(
        &mut self,
        key: K,
        value: Option<V>,
        eligible: impl Fn(RelayId, &K) -> bool,
    ) -> Vec<(RelayId, Delta<K, V>)> {
        match value {
            Some(v) => {
                if self.local.get(&key) == Some(&v) {
                    return Vec::new();
                }
                self.local.insert(key.clone(), v);
            }
            None => {
                if self.local.remove(&key).is_none() {
                    return Vec::new();
                }
            }
        }
        self.sync_key(&key, &eligible)
    }

    /// Records what `peer` announced (`Some`, path starting with `peer`) or
    /// withdrew (`None`) for `key`. An announcement whose path holds this
    /// relay is a loop: it counts as a withdrawal. Returns the deltas to send.
    pub fn learn(
        &mut self,
        peer: RelayId,
        key: K,
        entry: Option<Entry<V>>,
        eligible: impl Fn(RelayId, &K) -> bool,
    ) -> Vec<(RelayId, Delta<K, V>)> {
        let entry = entry.filter(|e| !e.path.contains(&self.me));
        let changed = match entry {
            Some(e) => {
                let m = self.learned.entry(key.clone()).or_default();
                if m.get(&peer) == Some(&e) {
                    false
                } else {
                    m.insert(peer, e);
                    true
                }
            }
            None => match self.learned.get_mut(&key) {
                Some(m) => {
                    let had = m.remove(&peer).is_some();
                    if m.is_empty() {
                        self.learned.remove(&key);
                    }
                    had
                }
                None => false,
            },
        };
        if changed {
            self.sync_key(&key, &eligible)
        } else {
            Vec::new()
        }
    }

    /// A peer's link came up: everything it should know, from scratch.
    pub fn peer_up(
        &mut self,
        peer: RelayId,
        eligible: impl Fn(RelayId, &K) -> bool,
    ) -> Vec<(RelayId, Delta<K, V>)> {
        self.told.insert(peer, HashMap::new());
        let mut keys: Vec<K> = self.keys().cloned().collect();
        keys.sort();
        let mut out = Vec::new();
        for k in keys {
            if let Some(d) = self.sync_peer(peer, &k, &eligible) {
                out.push((peer, d));
            }
        }
        out
    }

    /// A peer's link went down: forget what it said and what it was told;
    /// tell the others what changed.
    pub fn peer_down(
        &mut self,
        peer: RelayId,
        eligible: impl Fn(RelayId, &K) -> bool,
    ) -> Vec<(RelayId, Delta<K, V>)> {
        self.told.remove(&peer);
        let mut keys: Vec<K> = self
            .learned
            .iter()
            .filter(|(_, m)| m.contains_key(&peer))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for k in keys {
            if let Some(m) = self.learned.get_mut(&k) {
                m.remove(&peer);
                if m.is_empty() {
                    self.learned.remove(&k);
                }
            }
            out.extend(self.sync_key(&k, &eligible));
        }
        out
    }

    /// Re-checks what every up peer was told about `key` (after a change to
    /// which peers are eligible for it, for example).
    pub fn sync_key(
        &mut self,
        key: &K,
        eligible: &impl Fn(RelayId, &K) -> bool,
    ) -> Vec<(RelayId, Delta<K, V>)> {
        let peers: Vec<RelayId> = self.told.keys().copied().collect();
        peers
            .into_iter()
            .filter_map(|p| self.sync_peer(p, key, eligible).map(|d| (p, d)))
            .collect()
    }

    fn sync_peer(
        &mut self,
        peer: RelayId,
        key: &K,
        eligible: &impl Fn(RelayId, &K) -> bool,
    ) -> Option<Delta<K, V>> {
        let want = self
            .best(key)
            .filter(|e| eligible(peer, key) && !e.path.contains(&peer) && e.path.len() <= MAX_PATH);
        let told = self.told.get_mut(&peer)?;
        match want {
            Some(e) => {
                if told.get(key) == Some(&e) {
                    return None;
                }
                told.insert(key.clone(), e.clone());
                Some(Delta::Announce(key.clone(), e))
            }
            None => told.remove(key).map(|_| Delta::Withdraw(key.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u8) -> RelayId {
        RelayId([n; 8])
    }

    fn all(_: RelayId, _: &u32) -> bool {
        true
    }

    #[test]
    fn a_local_value_is_announced_to_up_peers_once() {
        let mut t: PathVector<u32, &str> = PathVector::new(r(1));
        assert!(t.peer_up(r(2), all).is_empty());
        let d = t.set_local(7, Some("x"), all);
        assert_eq!(
            d,
            vec![(
                r(2),
                Delta::Announce(
                    7,
                    Entry {
                        path: vec![r(1)],
                        value: "x"
                    }
                )
            )]
        );
        assert!(
            t.set_local(7, Some("x"), all).is_empty(),
            "no change, nothing sent"
        );
        // A peer coming up later gets it in its dump.
        let d = t.peer_up(r(3), all);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, r(3));
        assert_eq!(t.set_local(7, None, all).len(), 2, "withdrawn from both");
    }

    #[test]
    fn learned_entries_go_on_with_the_path_but_never_back() {
        let mut t: PathVector<u32, &str> = PathVector::new(r(1));
        t.peer_up(r(2), all);
        t.peer_up(r(3), all);
        let d = t.learn(
            r(2),
            7,
            Some(Entry {
                path: vec![r(2), r(9)],
                value: "x",
            }),
            all,
        );
        // Only r(3) hears it, with r(1) in front; r(2) is on the path.
        assert_eq!(
            d,
            vec![(
                r(3),
                Delta::Announce(
                    7,
                    Entry {
                        path: vec![r(1), r(2), r(9)],
                        value: "x"
                    }
                )
            )]
        );
        // A shorter path via r(3) wins; r(3) cannot be told its own route,
        // so it is withdrawn there, and r(2) now hears the r(3) path.
        let d = t.learn(
            r(3),
            7,
            Some(Entry {
                path: vec![r(3)],
                value: "y",
            }),
            all,
        );
        assert!(d.contains(&(r(3), Delta::Withdraw(7))), "{d:?}");
        assert!(
            d.contains(&(
                r(2),
                Delta::Announce(
                    7,
                    Entry {
                        path: vec![r(1), r(3)],
                        value: "y"
                    }
                )
            )),
            "{d:?}"
        );
    }

    #[test]
    fn a_path_through_me_is_a_loop_and_counts_as_withdrawal() {
        let mut t: PathVector<u32, ()> = PathVector::new(r(1));
        t.peer_up(r(2), all);
        t.learn(
            r(2),
            5,
            Some(Entry {
                path: vec![r(2), r(4)],
                value: (),
            }),
            all,
        );
        assert!(t.best(&5).is_some());
        t.learn(
            r(2),
            5,
            Some(Entry {
                path: vec![r(2), r(1), r(4)],
                value: (),
            }),
            all,
        );
        assert!(
            t.best(&5).is_none(),
            "the looping path replaced and dropped"
        );
    }

    #[test]
    fn a_peer_going_down_takes_its_entries_along() {
        let mut t: PathVector<u32, ()> = PathVector::new(r(1));
        t.peer_up(r(2), all);
        t.peer_up(r(3), all);
        t.learn(
            r(2),
            5,
            Some(Entry {
                path: vec![r(2)],
                value: (),
            }),
            all,
        );
        t.learn(
            r(3),
            5,
            Some(Entry {
                path: vec![r(3), r(4), r(2)],
                value: (),
            }),
            all,
        );
        assert_eq!(t.best(&5).unwrap().path, vec![r(1), r(2)]);
        let d = t.peer_down(r(2), all);
        assert_eq!(t.best(&5).unwrap().path, vec![r(1), r(3), r(4), r(2)]);
        // r(3) was told the r(2) path; now the best is its own: withdraw.
        assert_eq!(d, vec![(r(3), Delta::Withdraw(5))]);
        let d = t.peer_down(r(3), all);
        assert!(t.best(&5).is_none());
        assert!(d.is_empty(), "nobody left to tell");
        assert_eq!(t.keys().count(), 0, "nothing kept");
    }

    #[test]
    fn paths_past_the_limit_are_not_announced() {
        let mut t: PathVector<u32, ()> = PathVector::new(r(100));
        t.peer_up(r(101), all);
        t.peer_up(r(102), all);
        let long: Vec<RelayId> = (0..MAX_PATH as u8).map(r).collect();
        let d = t.learn(
            r(0),
            1,
            Some(Entry {
                path: long,
                value: (),
            }),
            all,
        );
        assert!(t.best(&1).is_some(), "usable here");
        assert!(d.is_empty(), "but one more hop would pass MAX_PATH: {d:?}");
    }

    #[test]
    fn ineligible_peers_hear_nothing() {
        let mut t: PathVector<u32, ()> = PathVector::new(r(1));
        t.peer_up(r(2), all);
        t.peer_up(r(3), all);
        let only_3 = |p: RelayId, _: &u32| p == r(3);
        let d = t.set_local(1, Some(()), only_3);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, r(3));
    }
}
