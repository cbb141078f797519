//! Who is online for direct calls: fingerprint -> the `_signal` connection
//! that proved it (sans-IO).
//!
//! One live registration per device of a person (`register_presence`'s
//! `device`; a client older than devices is the person's one device without
//! an id): a person's phone and laptop are both online and a call rings both.
//! The same device registering again replaces its older registration, whose
//! connection the caller closes with `CloseCode::Replaced`; so does a
//! registration beyond [`MAX_DEVICES`] (the device silent longest goes). A
//! registration ends when its connection does, or when the connection has
//! been silent for the keep-alive timeout ([`PresenceRegistry::expire`]).
//! Nothing here reads a clock: `now` comes in with every call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wzp_proto::presence::DeviceId;
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

/// Most devices one person keeps registered on a relay at once; a
/// registration beyond it replaces the one that has been silent longest.
pub const MAX_DEVICES: usize = 8;

/// One live registration: one device of a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The connection calls are routed to.
    pub conn: ConnId,
    /// Which device (none from a client older than devices: the person's
    /// one such registration).
    pub device: Option<DeviceId>,
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
    /// Another device of a person already online.
    Added,
    /// The same connection registered again (alias refreshed).
    Refreshed,
    /// It replaced the registration on this older connection (the same
    /// device registering again, or the silent-longest of
    /// [`MAX_DEVICES`]), which must be closed.
    Replaced(ConnId),
}

/// The presence table.
#[derive(Debug)]
pub struct PresenceRegistry {
    /// Each person's devices, in the order they registered.
    by_fp: HashMap<Fingerprint, Vec<Presence>>,
    by_conn: HashMap<ConnId, Fingerprint>,
    keepalive: Duration,
    /// Candidate expiry times; entries are checked against `last_seen` when
    /// they fall due, so refreshing a registration costs no heap work.
    expiries: BinaryHeap<Reverse<(Instant, ConnId)>>,
    devices: usize,
}

impl PresenceRegistry {
    /// An empty table with the given keep-alive timeout.
    pub fn new(keepalive: Duration) -> PresenceRegistry {
        PresenceRegistry {
            by_fp: HashMap::new(),
            by_conn: HashMap::new(),
            keepalive,
            expiries: BinaryHeap::new(),
            devices: 0,
        }
    }

    /// The keep-alive timeout.
    pub fn keepalive(&self) -> Duration {
        self.keepalive
    }

    /// Registers `fp` on `conn` as `device`.
    pub fn register(
        &mut self,
        fp: Fingerprint,
        conn: ConnId,
        device: Option<DeviceId>,
        alias: Option<String>,
        observed_addr: SocketAddr,
        now: Instant,
    ) -> Registered {
        // A connection holds one fingerprint: re-registering as another drops
        // the first.
        if let Some(prev) = self.by_conn.get(&conn).copied() {
            if prev != fp {
                self.remove_conn(conn);
            }
        }
        let devices = self.by_fp.entry(fp).or_default();
        if let Some(p) = devices.iter_mut().find(|p| p.conn == conn) {
            p.device = device;
            p.alias = alias;
            p.observed_addr = observed_addr;
            p.last_seen = now;
            self.expiries.push(Reverse((now + self.keepalive, conn)));
            return Registered::Refreshed;
        }
        let same_device = devices.iter().position(|p| p.device == device);
        let outcome = match same_device {
            Some(i) => Registered::Replaced(devices.remove(i).conn),
            None if devices.len() >= MAX_DEVICES => {
                let i = devices
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, p)| p.last_seen)
                    .map_or(0, |(i, _)| i);
                Registered::Replaced(devices.remove(i).conn)
            }
            None if devices.is_empty() => Registered::New,
            None => Registered::Added,
        };
        devices.push(Presence {
            conn,
            device,
            alias,
            since: now,
            observed_addr,
            last_seen: now,
        });
        match outcome {
            Registered::Replaced(old) => {
                self.by_conn.remove(&old);
            }
            _ => self.devices += 1,
        }
        self.by_conn.insert(conn, fp);
        self.expiries.push(Reverse((now + self.keepalive, conn)));
        outcome
    }

    fn entry_mut(&mut self, conn: ConnId) -> Option<&mut Presence> {
        let fp = self.by_conn.get(&conn)?;
        self.by_fp.get_mut(fp)?.iter_mut().find(|p| p.conn == conn)
    }

    /// A frame arrived on `conn`: its registration stays alive.
    pub fn touch(&mut self, conn: ConnId, now: Instant) {
        if let Some(p) = self.entry_mut(conn) {
            p.last_seen = now;
        }
    }

    /// The connection ended: its registration (if any) ends. Returns the
    /// fingerprint it held and whether that person is now offline (no
    /// device left).
    pub fn remove_conn(&mut self, conn: ConnId) -> Option<(Fingerprint, bool)> {
        let fp = self.by_conn.remove(&conn)?;
        let devices = self.by_fp.get_mut(&fp)?;
        let before = devices.len();
        devices.retain(|p| p.conn != conn);
        self.devices -= before - devices.len();
        let offline = devices.is_empty();
        if offline {
            self.by_fp.remove(&fp);
        }
        Some((fp, offline))
    }

    /// The newest registration of `fp` (its alias is the person's).
    pub fn get(&self, fp: &Fingerprint) -> Option<&Presence> {
        self.by_fp.get(fp).and_then(|d| d.last())
    }

    /// Every registered device of `fp`, oldest registration first.
    pub fn devices_of(&self, fp: &Fingerprint) -> &[Presence] {
        self.by_fp.get(fp).map_or(&[], Vec::as_slice)
    }

    /// The connections of every registered device of `fp` (what an offer
    /// to the person rings, and a missed call is told to).
    pub fn conns_of(&self, fp: &Fingerprint) -> Vec<ConnId> {
        self.devices_of(fp).iter().map(|p| p.conn).collect()
    }

    /// The registration on `conn`.
    pub fn by_conn(&self, conn: ConnId) -> Option<&Presence> {
        let fp = self.by_conn.get(&conn)?;
        self.by_fp.get(fp)?.iter().find(|p| p.conn == conn)
    }

    /// The fingerprint registered on `conn`.
    pub fn fingerprint_of(&self, conn: ConnId) -> Option<Fingerprint> {
        self.by_conn.get(&conn).copied()
    }

    /// Every live registration (each device), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Fingerprint, &Presence)> {
        self.by_fp
            .iter()
            .flat_map(|(fp, d)| d.iter().map(move |p| (fp, p)))
    }

    /// How many fingerprints are online.
    pub fn len(&self) -> usize {
        self.by_fp.len()
    }

    /// How many devices are registered (every person's).
    pub fn device_count(&self) -> usize {
        self.devices
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
    /// returns them with whether their person went offline (their
    /// connections should be closed with `CloseCode::Timeout`).
    pub fn expire(&mut self, now: Instant) -> Vec<(Fingerprint, ConnId, bool)> {
        let mut expired = Vec::new();
        while let Some(Reverse((due, conn))) = self.expiries.peek().copied() {
            if due > now {
                break;
            }
            self.expiries.pop();
            let Some(p) = self.by_conn(conn) else {
                continue; // gone already
            };
            let real_due = p.last_seen + self.keepalive;
            if real_due <= now {
                if let Some((fp, offline)) = self.remove_conn(conn) {
                    expired.push((fp, conn, offline));
                }
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

    fn dev(n: u8) -> Option<DeviceId> {
        Some([n; wzp_proto::presence::DEVICE_ID_LEN])
    }

    #[test]
    fn register_replace_refresh_and_remove() {
        let t0 = Instant::now();
        let mut reg = PresenceRegistry::new(Duration::from_secs(10));
        assert_eq!(
            reg.register(fp(1), ConnId(1), None, Some("a".into()), addr(1), t0),
            Registered::New
        );
        assert_eq!(
            reg.register(
                fp(1),
                ConnId(1),
                None,
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
        // A newer connection of the same (id-less) device replaces the older.
        assert_eq!(
            reg.register(
                fp(1),
                ConnId(2),
                None,
                None,
                addr(2),
                t0 + Duration::from_secs(2)
            ),
            Registered::Replaced(ConnId(1))
        );
        assert_eq!(reg.get(&fp(1)).unwrap().conn, ConnId(2));
        assert_eq!(reg.get(&fp(1)).unwrap().observed_addr, addr(2));
        assert_eq!(reg.fingerprint_of(ConnId(1)), None);
        assert_eq!(reg.device_count(), 1);
        // The old connection ending does not take the new registration down.
        assert_eq!(reg.remove_conn(ConnId(1)), None);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.remove_conn(ConnId(2)), Some((fp(1), true)));
        assert!(reg.is_empty());
        assert_eq!(reg.device_count(), 0);
    }

    #[test]
    fn a_persons_devices_are_each_registered_and_the_same_device_replaces_itself() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut reg = PresenceRegistry::new(s(60));
        let table = [
            // (conn, device, what it does)
            (1, dev(1), Registered::New),
            (2, dev(2), Registered::Added),
            (3, None, Registered::Added),
            (4, dev(1), Registered::Replaced(ConnId(1))),
            (5, None, Registered::Replaced(ConnId(3))),
        ];
        for (i, (conn, device, want)) in table.into_iter().enumerate() {
            let got = reg.register(fp(1), ConnId(conn), device, None, addr(1), t0 + s(i as u64));
            assert_eq!(got, want, "conn {conn}");
        }
        let conns: Vec<u64> = reg.devices_of(&fp(1)).iter().map(|p| p.conn.0).collect();
        assert_eq!(conns, [2, 4, 5]);
        assert_eq!((reg.len(), reg.device_count()), (1, 3));
        assert_eq!(reg.get(&fp(1)).unwrap().conn, ConnId(5), "the newest");
        assert_eq!(reg.by_conn(ConnId(4)).unwrap().device, dev(1));
        // Devices go one by one; the person is offline with the last.
        assert_eq!(reg.remove_conn(ConnId(4)), Some((fp(1), false)));
        assert_eq!(reg.remove_conn(ConnId(2)), Some((fp(1), false)));
        assert_eq!(reg.remove_conn(ConnId(5)), Some((fp(1), true)));
        assert!(reg.devices_of(&fp(1)).is_empty());
        assert_eq!(reg.device_count(), 0);
    }

    #[test]
    fn beyond_the_device_limit_the_silent_longest_is_replaced() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut reg = PresenceRegistry::new(s(60));
        for n in 0..MAX_DEVICES as u8 {
            reg.register(fp(1), ConnId(n.into()), dev(n), None, addr(1), t0);
        }
        // Every device but #3 speaks after registering.
        for n in 0..MAX_DEVICES as u64 {
            if n != 3 {
                reg.touch(ConnId(n), t0 + s(5));
            }
        }
        assert_eq!(
            reg.register(fp(1), ConnId(100), dev(100), None, addr(1), t0 + s(6)),
            Registered::Replaced(ConnId(3))
        );
        assert_eq!(reg.devices_of(&fp(1)).len(), MAX_DEVICES);
        assert_eq!(reg.device_count(), MAX_DEVICES);
        assert_eq!(reg.fingerprint_of(ConnId(3)), None);
    }

    #[test]
    fn a_connection_holds_one_fingerprint() {
        let t0 = Instant::now();
        let mut reg = PresenceRegistry::new(Duration::from_secs(10));
        reg.register(fp(1), ConnId(1), None, None, addr(1), t0);
        reg.register(fp(2), ConnId(1), None, None, addr(1), t0);
        assert!(reg.get(&fp(1)).is_none());
        assert_eq!(reg.fingerprint_of(ConnId(1)), Some(fp(2)));
        assert_eq!((reg.len(), reg.device_count()), (1, 1));
    }

    #[test]
    fn silent_registrations_expire_and_touched_ones_stay() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut reg = PresenceRegistry::new(s(10));
        reg.register(fp(1), ConnId(1), None, None, addr(1), t0);
        reg.register(fp(2), ConnId(2), None, None, addr(2), t0);
        reg.register(fp(2), ConnId(3), dev(3), None, addr(3), t0);
        assert_eq!(reg.poll_timeout(), Some(t0 + s(10)));
        reg.touch(ConnId(2), t0 + s(6));
        assert!(reg.expire(t0 + s(9)).is_empty());
        assert_eq!(
            reg.expire(t0 + s(10)),
            vec![(fp(1), ConnId(1), true), (fp(2), ConnId(3), false)]
        );
        assert!(reg.get(&fp(1)).is_none());
        // conn 2's entry was re-armed at its real deadline.
        assert_eq!(reg.poll_timeout(), Some(t0 + s(16)));
        assert!(reg.expire(t0 + s(15)).is_empty());
        assert_eq!(reg.expire(t0 + s(16)), vec![(fp(2), ConnId(2), true)]);
        assert!(reg.is_empty());
        assert_eq!(reg.poll_timeout(), None);
    }
}
