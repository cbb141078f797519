//! Who is online for direct calls: fingerprint -> the `_signal` connection
//! that proved it (sans-IO).
//!
//! One live registration per fingerprint: a newer one replaces the older,
//! whose connection the caller closes with `CloseCode::Replaced`. A
//! registration ends when its connection does, or when the connection has
//! been silent for the keep-alive timeout ([`PresenceRegistry::expire`]).
//! Nothing here reads a clock: `now` comes in with every call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wzp_proto::Fingerprint;

/// A connection, as numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// Stands for the far party of a cross-relay call, reached through
    /// federation (the shell numbers connections from 1 and never gets here).
    pub const FEDERATION: ConnId = ConnId(u64::MAX);
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Default keep-alive timeout: a registered client pings well within it.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(45);

/// One live registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The connection calls are routed to.
    pub conn: ConnId,
    /// Display name.
    pub alias: Option<String>,
    /// When it registered.
    pub since: Instant,
    /// The client's address as the relay sees it.
    pub observed_addr: SocketAddr,
    /// Last frame from the connection.
    pub last_seen: Instant,
}

/// What a registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// The fingerprint was not online.
    New,
    /// The same connection registered again (alias refreshed).
    Refreshed,
    /// It replaced the registration on this older connection, which must be
    /// closed.
    Replaced(ConnId),
}

/// The presence table.
#[derive(Debug)]
pub struct PresenceRegistry {
    by_fp: HashMap<Fingerprint, Presence>,
    by_conn: HashMap<ConnId, Fingerprint>,
    keepalive: Duration,
    /// Candidate expiry times; entries are checked against `last_seen` when
    /// they fall due, so refreshing a registration costs no heap work.
    expiries: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl PresenceRegistry {
    /// An empty table with the given keep-alive timeout.
    pub fn new(keepalive: Duration) -> PresenceRegistry {
        PresenceRegistry {
            by_fp: HashMap::new(),
            by_conn: HashMap::new(),
            keepalive,
            expiries: BinaryHeap::new(),
        }
    }

    /// The keep-alive timeout.
    pub fn keepalive(&self) -> Duration {
        self.keepalive
    }

    /// Registers `fp` on `conn`.
    pub fn register(
        &mut self,
        fp: Fingerprint,
        conn: ConnId,
        alias: Option<String>,
        observed_addr: SocketAddr,
        now: Instant,
    ) -> Registered {
        let outcome = match self.by_fp.get(&fp) {
            None => Registered::New,
            Some(p) if p.conn == conn => Registered::Refreshed,
            Some(p) => Registered::Replaced(p.conn),
        };
        if let Registered::Replaced(old) = outcome {
            self.by_conn.remove(&old);
        }
        // A connection holds one fingerprint: re-registering as another drops
        // the first.
        if let Some(prev) = self.by_conn.insert(conn, fp) {
            if prev != fp {
                self.by_fp.remove(&prev);
            }
        }
        let since = match (&outcome, self.by_fp.get(&fp)) {
            (Registered::Refreshed, Some(p)) => p.since,
            _ => now,
        };
        self.by_fp.insert(
            fp,
            Presence {
                conn,
                alias,
                since,
                observed_addr,
                last_seen: now,
            },
        );
        self.expiries.push(Reverse((now + self.keepalive, conn)));
        outcome
    }

    /// A frame arrived on `conn`: its registration stays alive.
    pub fn touch(&mut self, conn: ConnId, now: Instant) {
        if let Some(p) = self
            .by_conn
            .get(&conn)
            .and_then(|fp| self.by_fp.get_mut(fp))
        {
            p.last_seen = now;
        }
    }

    /// The connection ended: its registration (if any) ends. Returns the
    /// fingerprint that went offline.
    pub fn remove_conn(&mut self, conn: ConnId) -> Option<Fingerprint> {
        let fp = self.by_conn.remove(&conn)?;
        self.by_fp.remove(&fp);
        Some(fp)
    }

    /// The live registration of `fp`.
    pub fn get(&self, fp: &Fingerprint) -> Option<&Presence> {
        self.by_fp.get(fp)
    }

    /// The fingerprint registered on `conn`.
    pub fn fingerprint_of(&self, conn: ConnId) -> Option<Fingerprint> {
        self.by_conn.get(&conn).copied()
    }

    /// Every live registration, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Fingerprint, &Presence)> {
        self.by_fp.iter()
    }

    /// How many fingerprints are online.
    pub fn len(&self) -> usize {
        self.by_fp.len()
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.by_fp.is_empty()
    }

    /// The earliest time [`PresenceRegistry::expire`] may have work (it may be
    /// early, never late).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((t, _))| *t)
    }

    /// Ends every registration silent for the keep-alive timeout at `now`;
    /// returns them (their connections should be closed with
    /// `CloseCode::Timeout`).
    pub fn expire(&mut self, now: Instant) -> Vec<(Fingerprint, ConnId)> {
        let mut expired = Vec::new();
        while let Some(Reverse((due, conn))) = self.expiries.peek().copied() {
            if due > now {
                break;
            }
            self.expiries.pop();
            let Some(fp) = self.by_conn.get(&conn).copied() else {
                continue; // gone already
            };
            let Some(p) = self.by_fp.get(&fp) else {
                continue;
            };
            let real_due = p.last_seen + self.keepalive;
            if real_due <= now {
                self.by_conn.remove(&conn);
                self.by_fp.remove(&fp);
                expired.push((fp, conn));
            } else {
                self.expiries.push(Reverse((real_due, conn)));
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint([n; 16])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn register_replace_refresh_and_remove() {
        let t0 = Instant::now();
        let mut reg = PresenceRegistry::new(Duration::from_secs(10));
        assert_eq!(
            reg.register(fp(1), ConnId(1), Some("a".into()), addr(1), t0),
            Registered::New
        );
        assert_eq!(
            reg.register(
                fp(1),
                ConnId(1),
                Some("a2".into()),
                addr(1),
                t0 + Duration::from_secs(1)
            ),
            Registered::Refreshed
        );
        let p = reg.get(&fp(1)).unwrap();
        assert_eq!(
            (p.conn, p.alias.as_deref(), p.since),
            (ConnId(1), Some("a2"), t0)
        );
        // A newer connection replaces the older.
        assert_eq!(
            reg.register(fp(1), ConnId(2), None, addr(2), t0 + Duration::from_secs(2)),
            Registered::Replaced(ConnId(1))
        );
        assert_eq!(reg.get(&fp(1)).unwrap().conn, ConnId(2));
        assert_eq!(reg.get(&fp(1)).unwrap().observed_addr, addr(2));
        assert_eq!(reg.fingerprint_of(ConnId(1)), None);
        // The old connection ending does not take the new registration down.
        assert_eq!(reg.remove_conn(ConnId(1)), None);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.remove_conn(ConnId(2)), Some(fp(1)));
        assert!(reg.is_empty());
    }

    #[test]
    fn a_connection_holds_one_fingerprint() {
        let t0 = Instant::now();
        let mut reg = PresenceRegistry::new(Duration::from_secs(10));
        reg.register(fp(1), ConnId(1), None, addr(1), t0);
        reg.register(fp(2), ConnId(1), None, addr(1), t0);
        assert!(reg.get(&fp(1)).is_none());
        assert_eq!(reg.fingerprint_of(ConnId(1)), Some(fp(2)));
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn silent_registrations_expire_and_touched_ones_stay() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut reg = PresenceRegistry::new(s(10));
        reg.register(fp(1), ConnId(1), None, addr(1), t0);
        reg.register(fp(2), ConnId(2), None, addr(2), t0);
        assert_eq!(reg.poll_timeout(), Some(t0 + s(10)));
        reg.touch(ConnId(2), t0 + s(6));
        assert!(reg.expire(t0 + s(9)).is_empty());
        assert_eq!(reg.expire(t0 + s(10)), vec![(fp(1), ConnId(1))]);
        assert!(reg.get(&fp(1)).is_none());
        // conn 2's entry was re-armed at its real deadline.
        assert_eq!(reg.poll_timeout(), Some(t0 + s(16)));
        assert!(reg.expire(t0 + s(15)).is_empty());
        assert_eq!(reg.expire(t0 + s(16)), vec![(fp(2), ConnId(2))]);
        assert!(reg.is_empty());
        assert_eq!(reg.poll_timeout(), None);
    }
}
