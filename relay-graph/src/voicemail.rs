//! Voice messages the relay keeps for the people registered on it
//! (sans-IO): their message keys, each person's mailbox, and the uploads
//! under way. The relay holds sealed bytes only ([`wzp_proto::voice_message`]):
//! it can withhold or drop a message, never read or forge one.
//!
//! - A person's **message key** is kept from their last registration here
//!   (at most [`MailLimits::max_keys`]; past it, the key registered longest
//!   ago of someone neither online nor with messages waiting goes). A message is taken only for someone whose key is here: whoever
//!   leaves it sealed it to that key, and the person comes back here.
//! - A message arrives in parts, in order, on one connection; it is stored
//!   when the last part comes, or dropped when its connection goes or it
//!   stalls ([`MailLimits::upload_timeout`]). Uploads under way count
//!   against the relay's bytes, at most [`MailLimits::max_uploads`] at once.
//! - One sender may have at most [`MailLimits::per_sender`] messages in one
//!   mailbox and [`MailLimits::per_sender_total`] on the relay, so no one
//!   fills another's mailbox or the relay alone.
//! - Each mailbox keeps at most [`MailLimits::per_person`] messages and
//!   [`MailLimits::per_person_bytes`]; the relay at most
//!   [`MailLimits::total_bytes`]. A message is kept [`MailLimits::keep_for`],
//!   or until its recipient deletes it. Memory only: a restart loses them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use wzp_proto::voice_message::{
    valid_message_id, MessageKey, MAX_MESSAGE_PARTS, MAX_SEALED_MESSAGE, MESSAGE_PART_LEN,
};
use wzp_proto::Fingerprint;

use crate::presence::ConnId;

pub mod disk;

/// How much the relay keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailLimits {
    /// Messages per person.
    pub per_person: usize,
    /// Bytes per person.
    pub per_person_bytes: usize,
    /// Bytes on the whole relay (0: voice messages are off).
    pub total_bytes: usize,
    /// How long a message is kept.
    pub keep_for: Duration,
    /// How long an upload may wait for its next part.
    pub upload_timeout: Duration,
    /// Message keys kept.
    pub max_keys: usize,
    /// Uploads under way per connection.
    pub uploads_per_conn: usize,
    /// Uploads under way from one other relay of the mesh (its senders'
    /// messages for mailboxes here).
    pub uploads_per_relay: usize,
    /// Uploads under way on the whole relay.
    pub max_uploads: usize,
    /// Messages one sender may have waiting in one mailbox.
    pub per_sender: usize,
    /// Messages one sender may have waiting on the relay.
    pub per_sender_total: usize,
    /// Bytes of fetched messages queued to their recipients and not yet
    /// written, on the whole relay (a fetch past it is refused for now).
    pub fetch_budget: usize,
}

impl Default for MailLimits {
    fn default() -> MailLimits {
        MailLimits {
            per_person: 10,
            per_person_bytes: 2 * 1024 * 1024,
            total_bytes: 64 * 1024 * 1024,
            keep_for: Duration::from_secs(7 * 24 * 3600),
            upload_timeout: Duration::from_secs(60),
            max_keys: 100_000,
            uploads_per_conn: 2,
            uploads_per_relay: 16,
            max_uploads: 64,
            per_sender: 3,
            per_sender_total: 20,
            fetch_budget: 32 * 1024 * 1024,
        }
    }
}

/// A message kept for its recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its id (the sender's).
    pub id: String,
    /// Who left it (registered when they did).
    pub from: Fingerprint,
    /// When the relay took it.
    pub at: Instant,
    /// The sealed bytes.
    pub sealed: Vec<u8>,
}

/// Why a part of a message was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailRefusal {
    /// Voice messages are off on this relay.
    #[error("this relay keeps no voice messages")]
    Off,
    /// The id cannot name a message.
    #[error("message id {0:?} must be 1..=32 of [a-z0-9-]")]
    BadId(String),
    /// `part`/`parts` out of range, an empty or oversized part.
    #[error("{0}")]
    BadPart(String),
    /// A part other than the next one of its upload.
    #[error("part {got} of message {id} came where part {want} was expected; send the parts in order, from 0")]
    OutOfOrder {
        /// The message.
        id: String,
        /// The part that came.
        got: u32,
        /// The part expected.
        want: u32,
    },
    /// The recipient's message key is not here.
    #[error("{0} has no message key at this relay: they have not registered here, so a message would never reach them")]
    NoKey(Fingerprint),
    /// The recipient's mailbox is full.
    #[error("{0}'s mailbox here is full; try later")]
    BoxFull(Fingerprint),
    /// The relay's storage is full.
    #[error("this relay's voice-message storage is full; try later")]
    RelayFull,
    /// The sender already left a message with this id for the recipient.
    #[error("message id {0} is in use; pick a fresh random id")]
    IdInUse(String),
    /// Too many uploads at once on one connection, or on the relay.
    #[error("at most {0} messages may be under way at once on a connection; try when one is done")]
    TooManyUploads(usize),
    /// The relay takes as many uploads as it can at once.
    #[error("this relay takes as many voice messages as it can at once; try again shortly")]
    RelayBusy,
    /// The sender has left as many as it may here.
    #[error("you have left as many voice messages waiting {0} as a sender may; wait until they are fetched")]
    SenderQuota(&'static str),
    /// A message to oneself.
    #[error("a voice message to yourself")]
    ToSelf,
}

struct Upload {
    from: Fingerprint,
    to: Fingerprint,
    parts: u32,
    next: u32,
    sealed: Vec<u8>,
    deadline: Instant,
    /// How long ago it was left (a message moved from another relay).
    age: Duration,
}

/// A change to the mailboxes, for a relay that keeps them on disk
/// ([`Mailboxes::persist`], [`Mailboxes::take_changes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailChange {
    /// A person's message key, new or again.
    Key(Fingerprint, MessageKey),
    /// A person's key left the table (past [`MailLimits::max_keys`]).
    KeyGone(Fingerprint),
    /// A message stored for its recipient.
    Kept(Fingerprint, Stored),
    /// A message gone (deleted by its recipient, or past its time):
    /// recipient, id, sender.
    Gone(Fingerprint, String, Fingerprint),
}

/// What the metrics show of the mailboxes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailView {
    /// The counters.
    pub counters: MailCounters,
    /// Messages kept.
    pub messages: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Message keys kept.
    pub keys: usize,
}

/// The counters of the mailboxes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailCounters {
    /// Messages stored.
    pub stored: u64,
    /// Messages handed to their recipient (each fetch counts each).
    pub delivered: u64,
    /// Messages deleted by their recipient.
    pub deleted: u64,
    /// Messages dropped for their age.
    pub expired: u64,
    /// Uploads dropped: their connection went or they stalled.
    pub abandoned: u64,
    /// Parts refused.
    pub refused: u64,
}

impl std::fmt::Debug for Mailboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailboxes")
            .field("keys", &self.keys.len())
            .field("messages", &self.len())
            .field("bytes", &self.bytes)
            .field("uploads", &self.uploads.len())
            .finish_non_exhaustive()
    }
}

/// The relay's voice messages.
pub struct Mailboxes {
    limits: MailLimits,
    keys: HashMap<Fingerprint, (MessageKey, u64)>,
    /// Registration order of the keys (a sequence number), oldest first.
    key_order: BTreeMap<u64, Fingerprint>,
    next_seq: u64,
    boxes: HashMap<Fingerprint, Vec<Stored>>,
    uploads: HashMap<(ConnId, String), Upload>,
    /// Bytes held by the uploads under way.
    upload_bytes: usize,
    bytes: usize,
    counters: MailCounters,
    /// The changes since the last [`Mailboxes::take_changes`], when kept.
    journal: Option<Vec<MailChange>>,
}

impl Mailboxes {
    /// Empty mailboxes with `limits`.
    pub fn new(limits: MailLimits) -> Mailboxes {
        Mailboxes {
            limits,
            keys: HashMap::new(),
            key_order: BTreeMap::new(),
            next_seq: 0,
            boxes: HashMap::new(),
            uploads: HashMap::new(),
            upload_bytes: 0,
            bytes: 0,
            counters: MailCounters::default(),
            journal: None,
        }
    }

    /// Records every change from now on, for [`Mailboxes::take_changes`]
    /// (a relay that keeps the mailboxes on disk).
    pub fn persist(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The changes since the last call (none unless [`Mailboxes::persist`]).
    pub fn take_changes(&mut self) -> Vec<MailChange> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn note(&mut self, c: MailChange) {
        if let Some(j) = self.journal.as_mut() {
            j.push(c);
        }
    }

    /// Messages and bytes kept for `to`.
    fn held(&self, to: &Fingerprint) -> (usize, usize) {
        self.boxes.get(to).map_or((0, 0), |b| {
            (b.len(), b.iter().map(|m| m.sealed.len()).sum::<usize>())
        })
    }

    /// Puts back a message kept on disk: not journalled. Refused (false)
    /// past the limits, or for someone whose key is not here.
    pub fn restore(&mut self, to: Fingerprint, m: Stored) -> bool {
        let len = m.sealed.len();
        let held = self.held(&to);
        if !self.is_on()
            || !self.keys.contains_key(&to)
            || !valid_message_id(&m.id)
            || len == 0
            || len > MAX_SEALED_MESSAGE
            || held.0 >= self.limits.per_person
            || held.1 + len > self.limits.per_person_bytes
            || self.bytes + len > self.limits.total_bytes
            || self
                .messages(&to)
                .iter()
                .any(|x| x.id == m.id && x.from == m.from)
        {
            return false;
        }
        self.bytes += len;
        let b = self.boxes.entry(to).or_default();
        let at = b.partition_point(|x| x.at <= m.at);
        b.insert(at, m);
        true
    }

    /// Puts back a key kept on disk: not journalled.
    pub fn restore_key(&mut self, fp: Fingerprint, key: MessageKey) {
        let journal = self.journal.take();
        self.set_key(fp, key, |_| false);
        self.journal = journal;
    }

    /// Whether the relay keeps voice messages at all.
    pub fn is_on(&self) -> bool {
        self.limits.total_bytes > 0
    }

    /// Keeps `fp`'s message key (its signature checked by the caller).
    /// Past [`MailLimits::max_keys`] the key registered longest ago of
    /// someone not `online` and with no message waiting goes; when every
    /// kept key is such a person's, this one is not kept.
    pub fn set_key(
        &mut self,
        fp: Fingerprint,
        key: MessageKey,
        online: impl Fn(&Fingerprint) -> bool,
    ) {
        if !self.is_on() {
            return;
        }
        if let Some((_, seq)) = self.keys.remove(&fp) {
            self.key_order.remove(&seq);
        }
        while self.keys.len() >= self.limits.max_keys.max(1) {
            let old = self
                .key_order
                .iter()
                .find(|(_, f)| !online(f) && !self.boxes.contains_key(f))
                .map(|(seq, f)| (*seq, *f));
            let Some((seq, old)) = old else {
                return;
            };
            self.key_order.remove(&seq);
            self.keys.remove(&old);
            self.note(MailChange::KeyGone(old));
        }
        self.next_seq += 1;
        self.keys.insert(fp, (key, self.next_seq));
        self.key_order.insert(self.next_seq, fp);
        self.note(MailChange::Key(fp, key));
    }

    /// `fp`'s message key, if kept.
    pub fn key(&self, fp: &Fingerprint) -> Option<&MessageKey> {
        self.keys.get(fp).map(|(k, _)| k)
    }

    /// Takes one part of message `id` from `from` (registered on `conn`)
    /// for `to`. `Ok(true)`: that was the last part and the message is
    /// stored; `Ok(false)`: more parts to come. A refused part drops its
    /// upload.
    #[allow(clippy::too_many_arguments)]
    pub fn put_part(
        &mut self,
        conn: ConnId,
        from: Fingerprint,
        id: &str,
        to: Fingerprint,
        part: u32,
        parts: u32,
        data: &[u8],
        now: Instant,
    ) -> Result<bool, MailRefusal> {
        self.put_part_aged(conn, from, id, to, part, parts, data, now, Duration::ZERO)
    }

    /// [`Mailboxes::put_part`] of a message left `age` ago (one another
    /// relay kept and moves here): it is kept as if left then.
    #[allow(clippy::too_many_arguments)]
    pub fn put_part_aged(
        &mut self,
        conn: ConnId,
        from: Fingerprint,
        id: &str,
        to: Fingerprint,
        part: u32,
        parts: u32,
        data: &[u8],
        now: Instant,
        age: Duration,
    ) -> Result<bool, MailRefusal> {
        let r = self.put(conn, from, id, to, part, parts, data, now, age);
        if r.is_err() {
            self.counters.refused += 1;
            self.abandon(conn, id);
        }
        r
    }

    /// Drops the upload of message `id` on `conn`, if one is under way.
    pub fn abandon(&mut self, conn: ConnId, id: &str) {
        if let Some(u) = self.uploads.remove(&(conn, id.to_string())) {
            self.upload_bytes -= u.sealed.len();
            self.counters.abandoned += 1;
        }
    }

    /// Messages `from` has waiting in `to`'s mailbox (or every mailbox),
    /// uploads under way included.
    fn sent_by(&self, from: &Fingerprint, to: Option<&Fingerprint>) -> usize {
        let kept: usize = self
            .boxes
            .iter()
            .filter(|(t, _)| to.is_none_or(|to| *t == to))
            .map(|(_, b)| b.iter().filter(|m| m.from == *from).count())
            .sum();
        let under_way = self
            .uploads
            .values()
            .filter(|u| u.from == *from && to.is_none_or(|to| u.to == *to))
            .count();
        kept + under_way
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        conn: ConnId,
        from: Fingerprint,
        id: &str,
        to: Fingerprint,
        part: u32,
        parts: u32,
        data: &[u8],
        now: Instant,
        age: Duration,
    ) -> Result<bool, MailRefusal> {
        if !self.is_on() {
            return Err(MailRefusal::Off);
        }
        if !valid_message_id(id) {
            return Err(MailRefusal::BadId(id.to_string()));
        }
        if !(1..=MAX_MESSAGE_PARTS).contains(&parts) || part >= parts {
            return Err(MailRefusal::BadPart(format!(
                "part {part} of {parts}; a message has 1..={MAX_MESSAGE_PARTS} parts, numbered from 0"
            )));
        }
        if data.is_empty() || data.len() > MESSAGE_PART_LEN {
            return Err(MailRefusal::BadPart(format!(
                "a part of {} bytes; 1..={MESSAGE_PART_LEN}",
                data.len()
            )));
        }
        if from == to {
            return Err(MailRefusal::ToSelf);
        }
        if !self.keys.contains_key(&to) {
            return Err(MailRefusal::NoKey(to));
        }
        let key = (conn, id.to_string());
        let want = self.uploads.get(&key).map_or(0, |u| u.next);
        if part != want {
            return Err(MailRefusal::OutOfOrder {
                id: id.to_string(),
                got: part,
                want,
            });
        }
        if part == 0 {
            let taken = self
                .boxes
                .get(&to)
                .is_some_and(|b| b.iter().any(|m| m.id == id && m.from == from))
                || self
                    .uploads
                    .iter()
                    .any(|((_, i), u)| i == id && u.from == from && u.to == to);
            if taken {
                return Err(MailRefusal::IdInUse(id.to_string()));
            }
            let under_way = self.uploads.keys().filter(|(c, _)| *c == conn).count();
            let cap = if crate::signal::mail::is_relay_conn(conn) {
                self.limits.uploads_per_relay
            } else {
                self.limits.uploads_per_conn
            };
            if under_way >= cap {
                return Err(MailRefusal::TooManyUploads(cap));
            }
            if self.uploads.len() >= self.limits.max_uploads {
                return Err(MailRefusal::RelayBusy);
            }
            if self.waiting(&to) >= self.limits.per_person {
                return Err(MailRefusal::BoxFull(to));
            }
            if self.sent_by(&from, Some(&to)) >= self.limits.per_sender {
                return Err(MailRefusal::SenderQuota("for this person"));
            }
            if self.sent_by(&from, None) >= self.limits.per_sender_total {
                return Err(MailRefusal::SenderQuota("on this relay"));
            }
            self.uploads.insert(
                key.clone(),
                Upload {
                    from,
                    to,
                    parts,
                    next: 0,
                    sealed: Vec::with_capacity(data.len()),
                    deadline: now,
                    age,
                },
            );
        }
        if self.bytes + self.upload_bytes + data.len() > self.limits.total_bytes {
            return Err(MailRefusal::RelayFull);
        }
        let Some(u) = self.uploads.get_mut(&key) else {
            return Err(MailRefusal::OutOfOrder {
                id: id.to_string(),
                got: part,
                want: 0,
            });
        };
        if u.to != to || u.parts != parts {
            return Err(MailRefusal::BadPart(format!(
                "part {part} of message {id} names another recipient or part count than its part 0"
            )));
        }
        if u.sealed.len() + data.len() > MAX_SEALED_MESSAGE {
            return Err(MailRefusal::BadPart(format!(
                "message {id} is past {MAX_SEALED_MESSAGE} bytes"
            )));
        }
        u.sealed.extend_from_slice(data);
        self.upload_bytes += data.len();
        u.next += 1;
        u.deadline = now + self.limits.upload_timeout;
        if u.next < u.parts {
            return Ok(false);
        }
        let len = u.sealed.len();
        let held = self.held(&to);
        if held.0 >= self.limits.per_person || held.1 + len > self.limits.per_person_bytes {
            return Err(MailRefusal::BoxFull(to));
        }
        let Some(u) = self.uploads.remove(&key) else {
            return Ok(false);
        };
        self.upload_bytes -= len;
        self.bytes += len;
        self.counters.stored += 1;
        let m = Stored {
            id: id.to_string(),
            from,
            at: now.checked_sub(u.age).unwrap_or(now),
            sealed: u.sealed,
        };
        if self.journal.is_some() {
            self.note(MailChange::Kept(to, m.clone()));
        }
        self.boxes.entry(to).or_default().push(m);
        Ok(true)
    }

    /// The messages kept for `fp`, oldest first.
    pub fn messages(&self, fp: &Fingerprint) -> &[Stored] {
        self.boxes.get(fp).map_or(&[], Vec::as_slice)
    }

    /// How many messages wait for `fp`.
    pub fn waiting(&self, fp: &Fingerprint) -> usize {
        self.messages(fp).len()
    }

    /// Counts a fetch of `n` messages.
    pub fn delivered(&mut self, n: usize) {
        self.counters.delivered += n as u64;
    }

    /// Forgets `fp`'s message `id` (from `from`, when given: two senders
    /// may pick one id); whether it was there.
    pub fn delete(&mut self, fp: &Fingerprint, id: &str, from: Option<&Fingerprint>) -> bool {
        let Some(b) = self.boxes.get_mut(fp) else {
            return false;
        };
        let Some(i) = b
            .iter()
            .position(|m| m.id == id && from.is_none_or(|f| m.from == *f))
        else {
            return false;
        };
        let m = b.remove(i);
        self.bytes -= m.sealed.len();
        if b.is_empty() {
            self.boxes.remove(fp);
        }
        self.counters.deleted += 1;
        self.note(MailChange::Gone(*fp, m.id, m.from));
        true
    }

    /// Drops the uploads under way on `conn` (it went).
    pub fn forget_conn(&mut self, conn: ConnId) {
        let ids: Vec<String> = self
            .uploads
            .keys()
            .filter(|(c, _)| *c == conn)
            .map(|(_, id)| id.clone())
            .collect();
        for id in ids {
            self.abandon(conn, &id);
        }
    }

    /// When [`Mailboxes::expire`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let uploads = self.uploads.values().map(|u| u.deadline);
        let kept = self
            .boxes
            .values()
            .filter_map(|b| b.first())
            .map(|m| m.at + self.limits.keep_for);
        uploads.chain(kept).min()
    }

    /// Drops messages past their keeping time and stalled uploads; returns
    /// the people whose mailboxes changed.
    pub fn expire(&mut self, now: Instant) -> Vec<Fingerprint> {
        let stalled: Vec<(ConnId, String)> = self
            .uploads
            .iter()
            .filter(|(_, u)| u.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (conn, id) in stalled {
            self.abandon(conn, &id);
        }
        let keep = self.limits.keep_for;
        let mut changed = Vec::new();
        let mut freed = 0;
        let mut expired = 0;
        let mut gone = Vec::new();
        self.boxes.retain(|fp, b| {
            let n = b.len();
            b.retain(|m| {
                let live = m.at + keep > now;
                if !live {
                    freed += m.sealed.len();
                    gone.push(MailChange::Gone(*fp, m.id.clone(), m.from));
                }
                live
            });
            if b.len() != n {
                expired += (n - b.len()) as u64;
                changed.push(*fp);
            }
            !b.is_empty()
        });
        self.bytes -= freed;
        self.counters.expired += expired;
        for g in gone {
            self.note(g);
        }
        changed
    }

    /// Messages kept, on the whole relay.
    pub fn len(&self) -> usize {
        self.boxes.values().map(Vec::len).sum()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The counters.
    pub fn counters(&self) -> MailCounters {
        self.counters
    }

    /// The metrics' view.
    pub fn view(&self) -> MailView {
        MailView {
            counters: self.counters,
            messages: self.len(),
            bytes: self.bytes,
            keys: self.keys.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wzp_proto::Seed;

    fn fp(n: u8) -> Fingerprint {
        Seed::from_bytes([n; 32]).identity().fingerprint()
    }

    fn key(n: u8) -> MessageKey {
        MessageKey::of(&Seed::from_bytes([n; 32]).identity())
    }

    fn boxes(limits: MailLimits) -> Mailboxes {
        let mut m = Mailboxes::new(limits);
        m.set_key(fp(2), key(2), |_| false);
        m
    }

    /// Leaves a whole message of `len` bytes in `parts` parts.
    fn leave(
        m: &mut Mailboxes,
        conn: u64,
        id: &str,
        len: usize,
        now: Instant,
    ) -> Result<bool, MailRefusal> {
        let sealed = vec![7u8; len];
        let parts: Vec<&[u8]> = sealed.chunks(MESSAGE_PART_LEN).collect();
        let n = parts.len() as u32;
        let mut last = Ok(false);
        for (i, p) in parts.iter().enumerate() {
            last = m.put_part(ConnId(conn), fp(1), id, fp(2), i as u32, n, p, now);
            last.clone()?;
        }
        last
    }

    #[test]
    fn a_message_in_parts_is_stored_whole_for_its_recipient_and_deleted_by_them() {
        let t0 = Instant::now();
        let mut m = boxes(MailLimits::default());
        let len = MESSAGE_PART_LEN * 2 + 100;
        assert_eq!(leave(&mut m, 1, "m1", len, t0), Ok(true));
        assert_eq!(m.waiting(&fp(2)), 1);
        let s = &m.messages(&fp(2))[0];
        assert_eq!((s.id.as_str(), s.from, s.sealed.len()), ("m1", fp(1), len));
        assert_eq!(m.bytes(), len);
        assert_eq!(m.counters().stored, 1);
        // The same id again from the same sender: refused.
        assert_eq!(
            leave(&mut m, 1, "m1", 10, t0),
            Err(MailRefusal::IdInUse("m1".into()))
        );
        assert!(!m.delete(&fp(1), "m1", None), "only the recipient deletes");
        assert!(!m.delete(&fp(2), "m1", Some(&fp(3))), "another sender's m1");
        assert!(m.delete(&fp(2), "m1", None));
        assert!(m.is_empty());
        assert_eq!(m.bytes(), 0);
        assert_eq!(m.counters().deleted, 1);
    }

    #[test]
    fn parts_out_of_order_or_out_of_bounds_are_refused_and_drop_the_upload() {
        let t0 = Instant::now();
        let mut m = boxes(MailLimits::default());
        let part = vec![1u8; 10];
        let c = ConnId(1);
        let table: Vec<(&str, u32, u32, Vec<u8>, Fingerprint, &str)> = vec![
            ("BAD", 0, 1, part.clone(), fp(2), "must be 1..=32"),
            (
                "m",
                1,
                2,
                part.clone(),
                fp(2),
                "part 1 of message m came where part 0",
            ),
            ("m", 0, 0, part.clone(), fp(2), "1..=11 parts"),
            ("m", 2, 2, part.clone(), fp(2), "numbered from 0"),
            (
                "m",
                0,
                MAX_MESSAGE_PARTS + 1,
                part.clone(),
                fp(2),
                "1..=11 parts",
            ),
            ("m", 0, 1, Vec::new(), fp(2), "a part of 0 bytes"),
            (
                "m",
                0,
                1,
                vec![0; MESSAGE_PART_LEN + 1],
                fp(2),
                "a part of 24577 bytes",
            ),
            (
                "m",
                0,
                1,
                part.clone(),
                fp(9),
                "has no message key at this relay",
            ),
        ];
        for (id, p, n, data, to, needle) in table {
            let e = m.put_part(c, fp(1), id, to, p, n, &data, t0).unwrap_err();
            assert!(e.to_string().contains(needle), "{id} {p}/{n}: {e}");
        }
        let e = m
            .put_part(c, fp(2), "m", fp(2), 0, 1, &part, t0)
            .unwrap_err();
        assert_eq!(e, MailRefusal::ToSelf);
        // Part 0 of 3, then part 2: the upload is dropped, part 1 finds none.
        m.put_part(c, fp(1), "m", fp(2), 0, 3, &part, t0).unwrap();
        assert!(matches!(
            m.put_part(c, fp(1), "m", fp(2), 2, 3, &part, t0),
            Err(MailRefusal::OutOfOrder {
                got: 2,
                want: 1,
                ..
            })
        ));
        assert!(m.put_part(c, fp(1), "m", fp(2), 1, 3, &part, t0).is_err());
        // Another part count than part 0's.
        m.put_part(c, fp(1), "n", fp(2), 0, 3, &part, t0).unwrap();
        assert!(m.put_part(c, fp(1), "n", fp(2), 1, 2, &part, t0).is_err());
        assert!(m.is_empty());
        assert_eq!(m.counters().abandoned, 2);
    }

    #[test]
    fn mailboxes_and_the_relay_are_bounded() {
        let t0 = Instant::now();
        let limits = MailLimits {
            per_person: 2,
            per_person_bytes: 1000,
            total_bytes: 1500,
            ..MailLimits::default()
        };
        let mut m = boxes(limits);
        m.set_key(fp(3), key(3), |_| false);
        assert_eq!(leave(&mut m, 1, "a", 100, t0), Ok(true));
        assert_eq!(leave(&mut m, 1, "b", 100, t0), Ok(true));
        assert_eq!(
            leave(&mut m, 1, "c", 100, t0),
            Err(MailRefusal::BoxFull(fp(2)))
        );
        m.delete(&fp(2), "a", None);
        assert_eq!(
            leave(&mut m, 1, "d", 901, t0),
            Err(MailRefusal::BoxFull(fp(2)))
        );
        // The relay's total: 100 held, 1300 for fp(3) would pass 1500... but
        // its own box takes 1000 at most.
        let mut big = Mailboxes::new(MailLimits {
            per_person_bytes: 10_000,
            total_bytes: 1500,
            ..MailLimits::default()
        });
        big.set_key(fp(2), key(2), |_| false);
        assert_eq!(leave(&mut big, 1, "a", 1000, t0), Ok(true));
        assert_eq!(
            leave(&mut big, 1, "b", 501, t0),
            Err(MailRefusal::RelayFull)
        );
        assert_eq!(leave(&mut big, 1, "b", 500, t0), Ok(true));
        // Off: nothing taken, no key kept.
        let mut off = Mailboxes::new(MailLimits {
            total_bytes: 0,
            ..MailLimits::default()
        });
        off.set_key(fp(2), key(2), |_| false);
        assert!(off.key(&fp(2)).is_none());
        assert_eq!(leave(&mut off, 1, "a", 10, t0), Err(MailRefusal::Off));
        // Two uploads at once per connection.
        let mut m = boxes(MailLimits::default());
        for id in ["u1", "u2"] {
            m.put_part(ConnId(1), fp(1), id, fp(2), 0, 2, &[1], t0)
                .unwrap();
        }
        assert_eq!(
            m.put_part(ConnId(1), fp(1), "u3", fp(2), 0, 2, &[1], t0),
            Err(MailRefusal::TooManyUploads(2))
        );
        m.put_part(ConnId(2), fp(1), "u3", fp(2), 0, 2, &[1], t0)
            .unwrap();
    }

    #[test]
    fn old_messages_stalled_uploads_and_gone_connections_are_dropped() {
        let t0 = Instant::now();
        let limits = MailLimits {
            per_sender: 10,
            ..MailLimits::default()
        };
        let mut m = boxes(limits);
        leave(&mut m, 1, "old", 10, t0).unwrap();
        let t1 = t0 + Duration::from_secs(3600);
        leave(&mut m, 1, "new", 10, t1).unwrap();
        m.put_part(ConnId(1), fp(1), "half", fp(2), 0, 2, &[1], t1)
            .unwrap();
        m.put_part(ConnId(2), fp(1), "gone", fp(2), 0, 2, &[1], t1)
            .unwrap();
        m.forget_conn(ConnId(2));
        assert_eq!(m.poll_timeout(), Some(t1 + limits.upload_timeout));
        assert!(m.expire(t1 + limits.upload_timeout).is_empty());
        // The stalled one is gone: its next part finds no upload.
        assert!(m
            .put_part(ConnId(1), fp(1), "half", fp(2), 1, 2, &[1], t1)
            .is_err());
        assert_eq!(m.counters().abandoned, 2);
        assert_eq!(m.poll_timeout(), Some(t0 + limits.keep_for));
        assert_eq!(m.expire(t0 + limits.keep_for), vec![fp(2)]);
        assert_eq!(m.messages(&fp(2)).len(), 1);
        assert_eq!(m.messages(&fp(2))[0].id, "new");
        assert_eq!(m.bytes(), 10);
        assert_eq!(m.counters().expired, 1);
    }

    #[test]
    fn a_journal_records_what_a_disk_must_keep_and_restoring_is_not_journalled() {
        let t0 = Instant::now();
        let mut m = Mailboxes::new(MailLimits {
            max_keys: 1,
            ..MailLimits::default()
        });
        m.set_key(fp(2), key(2), |_| false);
        assert!(m.take_changes().is_empty(), "nothing kept before persist");
        m.persist();
        m.set_key(fp(2), key(2), |_| false);
        leave(&mut m, 1, "m1", 10, t0).unwrap();
        m.delete(&fp(2), "m1", None);
        leave(&mut m, 1, "m2", 10, t0).unwrap();
        m.expire(t0 + MailLimits::default().keep_for);
        m.set_key(fp(3), key(3), |_| false);
        let changes = m.take_changes();
        let kinds: Vec<String> = changes
            .iter()
            .map(|c| match c {
                MailChange::Key(f, _) => format!("key {}", f == &fp(2) || f == &fp(3)),
                MailChange::KeyGone(f) => format!("key gone {}", f == &fp(2)),
                MailChange::Kept(to, s) => {
                    format!("kept {} {} {}", to == &fp(2), s.id, s.sealed.len())
                }
                MailChange::Gone(to, id, from) => {
                    format!("gone {} {id} {}", to == &fp(2), from == &fp(1))
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "key true",
                "kept true m1 10",
                "gone true m1 true",
                "kept true m2 10",
                "gone true m2 true",
                "key gone true",
                "key true",
            ]
        );
        assert!(m.take_changes().is_empty());
        // Restored: in time order, within the limits, not journalled.
        let mut r = Mailboxes::new(MailLimits {
            per_person: 2,
            ..MailLimits::default()
        });
        r.persist();
        r.restore_key(fp(2), key(2));
        let stored = |id: &str, at: Instant| Stored {
            id: id.into(),
            from: fp(1),
            at,
            sealed: vec![1; 5],
        };
        let t1 = t0 + Duration::from_secs(1);
        assert!(r.restore(fp(2), stored("late", t1)));
        assert!(r.restore(fp(2), stored("early", t0)));
        assert!(!r.restore(fp(2), stored("third", t0)), "past the mailbox");
        assert!(!r.restore(fp(9), stored("x", t0)), "nobody's key");
        let ids: Vec<&str> = r.messages(&fp(2)).iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["early", "late"]);
        assert_eq!(r.bytes(), 10);
        assert!(r.take_changes().is_empty());
        assert!(r.key(&fp(2)).is_some());
    }

    #[test]
    fn one_sender_cannot_fill_a_mailbox_or_the_relay_and_uploads_count_against_its_room() {
        let t0 = Instant::now();
        let mut m = boxes(MailLimits {
            per_sender: 2,
            per_sender_total: 3,
            ..MailLimits::default()
        });
        m.set_key(fp(3), key(3), |_| false);
        assert_eq!(leave(&mut m, 1, "a", 10, t0), Ok(true));
        // One under way counts too.
        m.put_part(ConnId(1), fp(1), "b", fp(2), 0, 2, &[1], t0)
            .unwrap();
        assert_eq!(
            leave(&mut m, 2, "c", 10, t0),
            Err(MailRefusal::SenderQuota("for this person"))
        );
        // The same id on another connection while it is under way: in use.
        assert_eq!(
            m.put_part(ConnId(3), fp(1), "b", fp(2), 0, 1, &[1], t0),
            Err(MailRefusal::IdInUse("b".into()))
        );
        let to3 =
            |m: &mut Mailboxes, id: &str| m.put_part(ConnId(4), fp(1), id, fp(3), 0, 1, &[1], t0);
        assert_eq!(to3(&mut m, "d"), Ok(true));
        assert_eq!(
            to3(&mut m, "e"),
            Err(MailRefusal::SenderQuota("on this relay"))
        );
        // Someone else still can.
        assert_eq!(
            m.put_part(ConnId(5), fp(4), "e", fp(3), 0, 1, &[1], t0),
            Ok(true)
        );
        // Uploads under way hold room: a relay of 100 bytes with 60 held
        // takes no 50 more, and at most max_uploads run at once.
        let mut r = Mailboxes::new(MailLimits {
            total_bytes: 100,
            max_uploads: 2,
            ..MailLimits::default()
        });
        r.set_key(fp(2), key(2), |_| false);
        r.put_part(ConnId(1), fp(1), "u1", fp(2), 0, 2, &[1; 60], t0)
            .unwrap();
        assert_eq!(
            r.put_part(ConnId(2), fp(3), "u2", fp(2), 0, 2, &[1; 50], t0),
            Err(MailRefusal::RelayFull)
        );
        r.put_part(ConnId(2), fp(3), "u2", fp(2), 0, 2, &[1; 10], t0)
            .unwrap();
        assert_eq!(
            r.put_part(ConnId(3), fp(4), "u3", fp(2), 0, 2, &[1], t0),
            Err(MailRefusal::RelayBusy)
        );
        r.forget_conn(ConnId(1));
        r.put_part(ConnId(3), fp(4), "u3", fp(2), 0, 2, &[1; 60], t0)
            .unwrap();
    }

    #[test]
    fn a_key_of_someone_online_or_with_messages_waiting_is_never_pushed_out() {
        let t0 = Instant::now();
        let mut m = Mailboxes::new(MailLimits {
            max_keys: 2,
            ..MailLimits::default()
        });
        m.set_key(fp(1), key(1), |_| false);
        m.set_key(fp(2), key(2), |_| false);
        leave(&mut m, 1, "a", 10, t0).unwrap();
        // fp(1) online, fp(2) has mail: a newcomer's key is not kept.
        m.set_key(fp(3), key(3), |f| *f == fp(1));
        assert!(m.key(&fp(3)).is_none());
        assert!(m.key(&fp(1)).is_some() && m.key(&fp(2)).is_some());
        // fp(1) went offline: its key makes room.
        m.set_key(fp(3), key(3), |_| false);
        assert!(m.key(&fp(1)).is_none());
        assert!(m.key(&fp(3)).is_some());
    }

    #[test]
    fn keys_are_bounded_and_the_longest_registered_goes_first() {
        let mut m = Mailboxes::new(MailLimits {
            max_keys: 2,
            ..MailLimits::default()
        });
        m.set_key(fp(1), key(1), |_| false);
        m.set_key(fp(2), key(2), |_| false);
        m.set_key(fp(1), key(1), |_| false);
        m.set_key(fp(3), key(3), |_| false);
        assert!(m.key(&fp(2)).is_none());
        assert_eq!(m.key(&fp(1)), Some(&key(1)));
        assert_eq!(m.key(&fp(3)), Some(&key(3)));
    }
}
