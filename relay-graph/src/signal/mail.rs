//! Voice messages for people whose mailbox is on another relay of the mesh
//! (docs/WIRE.md §8.5, DESIGN decision 29). A `message_key_query` for
//! someone not registered here floods a key query through the federation
//! ([`crate::federation::mail`]); the freshest answer (this relay's own key
//! included) is the one the client gets, and the connection's parts for
//! that person then go along the answer's path to the relay that gave it,
//! whose `stored` (or refusal) comes back the same way to the client.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wzp_proto::federation::{MailEvent, MailSignal, RelayId};
use wzp_proto::signal::ErrorCode;
use wzp_proto::voice_message::MessageKey;
use wzp_proto::{Fingerprint, SignalMessage};

use super::{Action, ConnId, Refusal, SignalHub};
use crate::voicemail::MailRefusal;

/// How long a relay waits for other relays' answers to a key query once it
/// has one (its own key, or another relay's answer) before giving the
/// client the freshest: counted from the query, and at least
/// [`KEY_GRACE`] after the first answer. An answer from a relay where the
/// person is registered now ends the wait at once.
pub const KEY_WAIT: Duration = Duration::from_millis(800);
/// After the first answer from another relay, how long fresher ones may
/// still come (a far relay answering late is not cut off at once).
pub const KEY_GRACE: Duration = Duration::from_millis(300);
/// The longest wait while no relay has answered (a mesh of slow links);
/// then the client hears there is no key.
pub const KEY_WAIT_MAX: Duration = Duration::from_secs(5);
/// Most key queries a relay has out at once; past it a query is answered
/// from this relay alone (each lives at most [`KEY_WAIT_MAX`]: at most ~50
/// floods a second leave a relay).
pub const MAX_KEY_QUERIES: usize = 256;
/// Least time between two key queries of one connection that ask the mesh
/// (a message needs one; a client asking faster would make every relay of
/// the mesh work for it): a faster one is refused `rate_limited`.
pub const KEY_QUERY_SPACING: Duration = Duration::from_secs(1);
/// How long a message moving to its recipient's relay may go unanswered
/// before it is sent again (at their next move).
pub const MOVE_WAIT: Duration = Duration::from_secs(60);
/// `seen_s` for a key whose holder's last registration is not known (kept
/// on disk across a restart): any known one is fresher.
pub const SEEN_UNKNOWN: u64 = u64::MAX;

/// A key query out for a client.
#[derive(Debug)]
pub(super) struct KeyQuery {
    conn: ConnId,
    who: Fingerprint,
    started: Instant,
    deadline: Instant,
    /// The freshest answer so far: how long ago the person was seen, the
    /// way to its relay (empty: this one), their key.
    best: Option<(u64, Vec<RelayId>, MessageKey)>,
}

/// The hub's state for voice messages across the mesh.
#[derive(Debug, Default)]
pub(super) struct AwayMail {
    queries: HashMap<u64, KeyQuery>,
    next_query: u64,
    /// Per connection: the person whose mailbox is elsewhere and the way
    /// to it (from the connection's last key query).
    routes: HashMap<ConnId, (Fingerprint, Vec<RelayId>)>,
    /// Messages sent on to another relay, by (sender, id): the connection
    /// to tell the outcome.
    sent: HashMap<(Fingerprint, String), ConnId>,
    /// When each person with a key here last left (not registered since).
    pub(super) last_seen: HashMap<Fingerprint, Instant>,
    /// Messages kept here on their way to the relay their recipient is on
    /// now, by (recipient, sender, id), with when they were sent.
    moving: HashMap<(Fingerprint, Fingerprint, String), Instant>,
    /// When each connection last asked the mesh for a key.
    asked: HashMap<ConnId, Instant>,
}

impl AwayMail {
    /// The earliest query deadline.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.queries.values().map(|q| q.deadline).min()
    }

    /// Drops what `conn` had under way.
    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        self.queries.retain(|_, q| q.conn != conn);
        self.routes.remove(&conn);
        self.sent.retain(|_, c| *c != conn);
        self.asked.remove(&conn);
    }
}

/// The connection number standing for relay `r`'s uploads into mailboxes
/// here (the shell numbers real connections from 1 up; these have the top
/// bit set).
pub fn relay_conn(r: RelayId) -> ConnId {
    let mut b = [0u8; 8];
    b.copy_from_slice(&r.0[..8]);
    ConnId(u64::from_be_bytes(b) | 1 << 63)
}

/// Whether `conn` stands for another relay ([`relay_conn`]).
pub fn is_relay_conn(conn: ConnId) -> bool {
    conn != ConnId::FEDERATION && conn.0 >> 63 == 1
}

impl SignalHub {
    /// How long ago `fp` was registered here, in seconds (0: now).
    fn seen_s(&self, fp: &Fingerprint, now: Instant) -> u64 {
        if !self.presence.devices_of(fp).is_empty() {
            return 0;
        }
        self.away.last_seen.get(fp).map_or(SEEN_UNKNOWN, |t| {
            now.saturating_duration_since(*t).as_secs().max(1)
        })
    }

    /// A client's `message_key_query`: answered at once when the person is
    /// registered here (or voice messages are off), else after asking the
    /// mesh.
    pub(super) fn message_key_query(&mut self, conn: ConnId, who: Fingerprint, now: Instant) {
        let local = self.mail.key(&who).copied();
        let online = !self.presence.devices_of(&who).is_empty();
        let asks_mesh = !online && self.mail.is_on() && self.away.queries.len() < MAX_KEY_QUERIES;
        if asks_mesh {
            if let Some(at) = self.away.asked.get(&conn) {
                if now.saturating_duration_since(*at) < KEY_QUERY_SPACING {
                    // The query under way, if any, stands.
                    return self.refuse(
                        conn,
                        Refusal::RateLimited,
                        ErrorCode::RateLimited,
                        format!(
                            "one message_key_query a second asks the relays of the mesh; \
                             ask again in {} s",
                            KEY_QUERY_SPACING.as_secs()
                        ),
                        "message_key_query",
                    );
                }
            }
        }
        // This query's answer decides where the connection's parts go.
        self.away.routes.remove(&conn);
        self.away.queries.retain(|_, q| q.conn != conn);
        if !asks_mesh {
            return self.send(
                conn,
                SignalMessage::MessageKey {
                    fingerprint: who,
                    key: local.map(Box::new),
                },
            );
        }
        self.away.asked.insert(conn, now);
        self.away.next_query += 1;
        let query = self.away.next_query;
        let best = local.map(|k| (self.seen_s(&who, now), Vec::new(), k));
        let wait = if best.is_some() {
            KEY_WAIT
        } else {
            KEY_WAIT_MAX
        };
        self.away.queries.insert(
            query,
            KeyQuery {
                conn,
                who,
                started: now,
                deadline: now + wait,
                best,
            },
        );
        self.push(Action::FederateMail(MailSignal {
            path: Vec::new(),
            event: MailEvent::KeyQuery { query, who },
        }));
    }

    /// Answers the key queries whose wait is over.
    pub(super) fn mail_timeouts(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .away
            .queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in due {
            self.answer_key_query(n);
        }
        // A person's last departure is worth keeping while their key is.
        if self.away.last_seen.len() > self.config.mail.max_keys {
            let mail = &self.mail;
            self.away.last_seen.retain(|fp, _| mail.key(fp).is_some());
        }
    }

    /// Gives query `n`'s client the freshest key found.
    fn answer_key_query(&mut self, n: u64) {
        let Some(q) = self.away.queries.remove(&n) else {
            return;
        };
        let key = match q.best {
            Some((_, path, key)) => {
                if !path.is_empty() {
                    self.away.routes.insert(q.conn, (q.who, path));
                }
                Some(Box::new(key))
            }
            None => None,
        };
        self.send(
            q.conn,
            SignalMessage::MessageKey {
                fingerprint: q.who,
                key,
            },
        );
    }

    /// A voice-message step from the federation.
    pub(super) fn federated_mail(&mut self, s: MailSignal, now: Instant) {
        let MailSignal { path, event } = s;
        match event {
            MailEvent::KeyQuery { query, who } => {
                if path.is_empty() {
                    // This relay's own query reached no relay: it cost the
                    // mesh nothing, so it counts against no spacing.
                    if let Some(q) = self.away.queries.get(&query) {
                        let conn = q.conn;
                        self.away.asked.remove(&conn);
                    }
                    return self.answer_key_query(query);
                }
                let Some(key) = self.mail.key(&who).copied() else {
                    return;
                };
                let seen_s = self.seen_s(&who, now);
                self.push(Action::FederateMail(MailSignal {
                    path,
                    event: MailEvent::Key {
                        query,
                        who,
                        key,
                        seen_s,
                    },
                }));
            }
            MailEvent::Key {
                query,
                who,
                key,
                seen_s,
            } => {
                let Some(q) = self.away.queries.get_mut(&query) else {
                    return;
                };
                // A relay handing out a key that is not the person's would
                // beat the real one; the client checks too.
                if q.who != who || key.verify() != Ok(who) {
                    return;
                }
                if q.best.as_ref().is_none_or(|(s, _, _)| seen_s < *s) {
                    q.best = Some((seen_s, path, key));
                }
                let enough = (now + KEY_GRACE).max(q.started + KEY_WAIT);
                q.deadline = q.deadline.min(enough);
                if seen_s == 0 {
                    self.answer_key_query(query);
                }
            }
            MailEvent::Part {
                id,
                from,
                to,
                part,
                parts,
                data,
                age_ms,
            } => {
                let Some(&origin) = path.first() else {
                    return;
                };
                let conn = relay_conn(origin);
                let age = Duration::from_millis(age_ms.unwrap_or(0)).min(self.config.mail.keep_for);
                let outcome = self
                    .mail
                    .put_part_aged(conn, from, &id, to, part, parts, &data, now, age);
                // A message moved here before whose `stored` was lost on
                // the way back comes again: it is here, so it is stored
                // (the relay that sent it may delete its copy).
                let here = || {
                    self.mail
                        .messages(&to)
                        .iter()
                        .any(|m| m.id == id && m.from == from)
                };
                let event = match outcome {
                    Ok(false) => return,
                    Ok(true) => {
                        self.tell_mail(to);
                        MailEvent::Stored { id, from, to }
                    }
                    Err(MailRefusal::IdInUse(_)) if age_ms.is_some() && here() => {
                        MailEvent::Stored { id, from, to }
                    }
                    Err(e) => MailEvent::Refused {
                        id,
                        from,
                        to,
                        reason: e.to_string(),
                    },
                };
                self.push(Action::FederateMail(MailSignal { path, event }));
            }
            MailEvent::Stored { id, from, to } => {
                if self.away.moving.remove(&(to, from, id.clone())).is_some() {
                    // Kept where its recipient is: not here any more.
                    self.mail.delete(&to, &id, Some(&from));
                    self.counters.mail_moved += 1;
                } else if let Some(conn) = self.away.sent.remove(&(from, id.clone())) {
                    self.send(conn, SignalMessage::VoiceMessageStored { id });
                }
            }
            MailEvent::Refused {
                id,
                from,
                to,
                reason,
            } => {
                if self.away.moving.remove(&(to, from, id.clone())).is_some() {
                    // It stays here, for the next time.
                } else if let Some(conn) = self.away.sent.remove(&(from, id.clone())) {
                    self.refuse(
                        conn,
                        Refusal::BadVoiceMessage,
                        ErrorCode::BadRequest,
                        format!("voice message {id}: {reason}"),
                        "voice_message",
                    );
                }
            }
        }
    }

    /// A part from `conn` (registered as `me`) for `to`, when `to`'s
    /// mailbox is on another relay: sent on along the way to it. `false`:
    /// the mailbox is here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn part_away(
        &mut self,
        conn: ConnId,
        me: Fingerprint,
        id: &str,
        to: Fingerprint,
        part: u32,
        parts: u32,
        data: &[u8],
    ) -> bool {
        let Some(path) = self
            .away
            .routes
            .get(&conn)
            .filter(|(who, _)| *who == to)
            .map(|(_, p)| p.clone())
        else {
            return false;
        };
        let event = MailEvent::Part {
            id: id.to_string(),
            from: me,
            to,
            part,
            parts,
            data: data.to_vec(),
            age_ms: None,
        };
        let key = (me, id.to_string());
        let busy = self.away.sent.values().filter(|c| **c == conn).count();
        let refusal = if let Err(e) = event.validate() {
            Some(e)
        } else if part == 0 && busy >= self.config.mail.uploads_per_conn {
            Some(format!(
                "{} voice messages of yours are on their way already; wait for them",
                self.config.mail.uploads_per_conn
            ))
        } else if part > 0 && self.away.sent.get(&key) != Some(&conn) {
            Some(format!("voice message {id}: part {part} before its part 0"))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.away.sent.remove(&key);
            self.refuse(
                conn,
                Refusal::BadVoiceMessage,
                ErrorCode::BadRequest,
                why,
                "voice_message",
            );
            return true;
        }
        self.away.sent.insert(key, conn);
        self.push(Action::FederateMail(MailSignal { path, event }));
        true
    }

    /// `who` is registered on another relay now (along `path`): the
    /// messages kept here for them move there, each kept here until that
    /// relay says it has it (a refusal leaves it here for the next time).
    pub(super) fn move_mail(&mut self, who: Fingerprint, path: Vec<RelayId>, now: Instant) {
        if path.len() < 2 || !self.presence.devices_of(&who).is_empty() {
            return;
        }
        // What was sent and never answered (a link lost on the way) goes
        // again.
        let stale = now.checked_sub(MOVE_WAIT);
        self.away
            .moving
            .retain(|_, at| stale.is_none_or(|s| *at > s));
        let mut out = Vec::new();
        for m in self.mail.messages(&who) {
            let key = (who, m.from, m.id.clone());
            if self.away.moving.contains_key(&key) {
                continue;
            }
            let parts: Vec<&[u8]> = wzp_proto::voice_message::parts(&m.sealed).collect();
            let n = parts.len() as u32;
            let age_ms = now.saturating_duration_since(m.at).as_millis() as u64;
            for (i, p) in parts.into_iter().enumerate() {
                out.push(MailEvent::Part {
                    id: m.id.clone(),
                    from: m.from,
                    to: who,
                    part: i as u32,
                    parts: n,
                    data: p.to_vec(),
                    age_ms: Some(age_ms),
                });
            }
            self.away.moving.insert(key, now);
        }
        for event in out {
            self.push(Action::FederateMail(MailSignal {
                path: path.clone(),
                event,
            }));
        }
    }
}
