//! Voice messages across the mesh, in the federation core: a relay whose
//! client asks for the message key of someone not registered on it floods a
//! `key_query`; every relay holding that person's key answers back along
//! the way the query came; the asking relay takes the freshest answer and
//! sends the message's parts along that answer's path to the holder, which
//! keeps it in the person's mailbox and says `stored` back the same way.
//!
//! ```text
//!  sender     relay A            relay B            relay C (holds bob's key)
//!   query ──> key_query [A] ───> key_query [A,B] ──> (hub: bob's key, seen 40 s ago)
//!   key <──── key [A,B,C] <───── key [A,B,C] <────── key [A,B,C]
//!   parts ──> part [A,B,C] ────> part [A,B,C] ─────> mailbox of bob
//!   stored <─ stored [A,B,C] <── stored [A,B,C] <─── stored
//! ```
//!
//! Relays on the way keep nothing but the queries they have seen (a flood
//! crosses each relay once): every later step names its whole path, and a
//! relay passes it on only from the neighbour the path puts before it, to
//! the one it puts after it. A part whose next link is down is answered
//! `refused` back. Only links agreed at [`MAIL_VERSION`] carry `mail`. A
//! query of this relay's that no link can carry comes straight back to the
//! signal service with an empty path (it answers from what it has).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use wzp_proto::federation::{
    FederationMessage, MailEvent, MailSignal, RelayId, MAIL_VERSION, MAX_PATH,
};
use wzp_proto::Fingerprint;

use super::{Action, FederationCore};

/// How long a relay remembers a query it passed on (a repeat within this
/// is dropped): well past a flood's crossing of the mesh.
pub const QUERY_MEMORY: Duration = Duration::from_secs(30);
/// Most queries remembered at once; a query past this while all are
/// recent is not passed on (a flood of queries stops here).
pub const MAX_QUERIES: usize = 4096;

/// What the core counts of `mail`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailCounters {
    /// Queries passed on to peers (each peer once).
    pub queries_forwarded: u64,
    /// Queries seen before, looping or past the hop limit: dropped.
    pub queries_dropped: u64,
    /// Steps passed on along their path (answers, parts, outcomes).
    pub forwarded: u64,
    /// Steps handed to this relay's signal service.
    pub delivered: u64,
    /// Steps from a neighbour the path does not put there, or whose path
    /// does not hold this relay: dropped.
    pub misrouted: u64,
    /// Steps whose next link was down (a part is answered `refused`).
    pub no_link: u64,
}

/// The core's `mail` state.
#[derive(Debug)]
pub(super) struct MailState {
    /// Queries seen, by (asking relay, its number), with when.
    seen: HashMap<(RelayId, u64), Instant>,
    /// The same, oldest first, for expiry.
    order: BTreeMap<(Instant, RelayId, u64), ()>,
    /// Mixed into this relay's own query numbers, so a restarted relay's
    /// numbers are not taken as repeats of the ones before.
    salt: u64,
    pub(super) counters: MailCounters,
}

impl MailState {
    pub(super) fn new(salt: u64) -> MailState {
        MailState {
            seen: HashMap::new(),
            order: BTreeMap::new(),
            salt,
            counters: MailCounters::default(),
        }
    }

    /// Whether query (`origin`, `query`) is new; remembers it if so.
    fn first_sight(&mut self, origin: RelayId, query: u64, now: Instant) -> bool {
        while let Some((&(at, o, q), _)) = self.order.first_key_value() {
            if now.saturating_duration_since(at) < QUERY_MEMORY {
                break;
            }
            self.order.remove(&(at, o, q));
            self.seen.remove(&(o, q));
        }
        if self.seen.contains_key(&(origin, query)) || self.seen.len() >= MAX_QUERIES {
            return false;
        }
        self.seen.insert((origin, query), now);
        self.order.insert((now, origin, query), ());
        true
    }
}

impl FederationCore {
    /// The way to the relay `fp` is registered on, when that is another
    /// relay (this one first).
    pub(super) fn remote_path(&self, fp: &Fingerprint) -> Option<Vec<RelayId>> {
        self.presence
            .best(fp)
            .filter(|e| e.path.len() >= 2)
            .map(|e| e.path.clone())
    }

    /// Says [`Action::Reachable`] when `fp`, not on another relay before a
    /// table change (`was_remote`), is now.
    pub(super) fn note_reach(&mut self, fp: Fingerprint, was_remote: bool) {
        if was_remote {
            return;
        }
        if let Some(path) = self.remote_path(&fp) {
            self.actions.push(Action::Reachable { who: fp, path });
        }
    }

    /// The `mail` counters.
    pub fn mail_counters(&self) -> &MailCounters {
        &self.mail.counters
    }

    /// Up peers agreed at [`MAIL_VERSION`] or later, not in `path`.
    fn mail_peers(&self, path: &[RelayId]) -> Vec<RelayId> {
        self.links
            .keys()
            .copied()
            .filter(|p| !path.contains(p))
            .filter(|p| self.link_version(*p).is_some_and(|v| v >= MAIL_VERSION))
            .collect()
    }

    /// A step from this relay's signal service ([`super::Input::LocalMail`]).
    pub(super) fn local_mail(&mut self, s: MailSignal, now: Instant) {
        let MailSignal { mut path, event } = s;
        match event {
            MailEvent::KeyQuery { query, who } => {
                if self.mail_peers(&[self.me]).is_empty() {
                    // Nobody to ask: the service answers from what it has.
                    self.mail.counters.delivered += 1;
                    let back = MailSignal {
                        path: Vec::new(),
                        event: MailEvent::KeyQuery { query, who },
                    };
                    return self.actions.push(Action::Mail(back));
                }
                let query = query ^ self.mail.salt;
                self.mail.first_sight(self.me, query, now);
                self.flood(vec![self.me], MailEvent::KeyQuery { query, who });
            }
            MailEvent::Key { .. } => {
                if path.contains(&self.me) {
                    self.mail.counters.misrouted += 1;
                    return;
                }
                path.push(self.me);
                let at = path.len() - 1;
                self.pass_on(path, at, event);
            }
            _ => {
                let Some(at) = path.iter().position(|r| *r == self.me) else {
                    self.mail.counters.misrouted += 1;
                    return;
                };
                self.pass_on(path, at, event);
            }
        }
    }

    /// A `mail` message from `peer`.
    pub(super) fn mail_message(
        &mut self,
        peer: RelayId,
        path: Vec<RelayId>,
        event: MailEvent,
        now: Instant,
    ) {
        if let MailEvent::KeyQuery { query, who } = event {
            let fresh = path.last() == Some(&peer)
                && !path.contains(&self.me)
                && self.mail.first_sight(path[0], query, now);
            if !fresh {
                self.mail.counters.queries_dropped += 1;
                return;
            }
            self.deliver_mail(path.clone(), MailEvent::KeyQuery { query, who });
            if path.len() < MAX_PATH {
                let mut on = path;
                on.push(self.me);
                self.flood(on, MailEvent::KeyQuery { query, who });
            }
            return;
        }
        let Some(at) = path.iter().position(|r| *r == self.me) else {
            self.mail.counters.misrouted += 1;
            return;
        };
        // Outwards steps come from the relay before this one on the path;
        // the others from the one after it.
        let from_ok = if event.outwards() {
            at > 0 && path[at - 1] == peer
        } else {
            path.get(at + 1) == Some(&peer)
        };
        if !from_ok {
            self.mail.counters.misrouted += 1;
            return;
        }
        self.pass_on(path, at, event);
    }

    /// Sends a query on to every mail peer not on its path.
    fn flood(&mut self, path: Vec<RelayId>, event: MailEvent) {
        for p in self.mail_peers(&path) {
            self.mail.counters.queries_forwarded += 1;
            self.send(
                p,
                FederationMessage::Mail {
                    path: path.clone(),
                    event: event.clone(),
                },
            );
        }
    }

    /// Step `event` at this relay (`path[at]`): handed to the signal service
    /// at its end, else sent to the next relay its way.
    fn pass_on(&mut self, path: Vec<RelayId>, at: usize, event: MailEvent) {
        let next = if event.outwards() {
            path.get(at + 1).copied()
        } else {
            at.checked_sub(1).map(|i| path[i])
        };
        let Some(next) = next else {
            return self.deliver_mail(path, event);
        };
        if self.link_version(next).is_some_and(|v| v >= MAIL_VERSION) {
            self.mail.counters.forwarded += 1;
            return self.send(next, FederationMessage::Mail { path, event });
        }
        self.mail.counters.no_link += 1;
        if let MailEvent::Part { id, from, to, .. } = event {
            let refused = MailEvent::Refused {
                id,
                from,
                to,
                reason: "a relay on the way to the mailbox lost its link; try again".into(),
            };
            if at == 0 {
                self.deliver_mail(path, refused);
            } else {
                self.pass_on(path, at, refused);
            }
        }
    }

    /// Hands a step to this relay's signal service; an answer to one of
    /// this relay's own queries gets back the number the service gave it.
    fn deliver_mail(&mut self, path: Vec<RelayId>, event: MailEvent) {
        let event = match event {
            MailEvent::Key {
                query,
                who,
                key,
                seen_s,
            } => MailEvent::Key {
                query: query ^ self.mail.salt,
                who,
                key,
                seen_s,
            },
            e => e,
        };
        self.mail.counters.delivered += 1;
        self.actions.push(Action::Mail(MailSignal { path, event }));
    }
}

#[cfg(test)]
mod tests;
