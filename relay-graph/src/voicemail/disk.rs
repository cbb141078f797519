//! Voice messages kept on disk (`voice_message_dir`), so a relay restart
//! loses none: the shell of [`super::Mailboxes`]. Read once at start
//! ([`MailDisk::open`]); after that the hub's changes
//! ([`super::MailChange`]) are written as they come, before the hub's
//! answers go out (a sender told `voice_message_stored` has its message on
//! the disk), each file whole (written beside, then renamed). Messages are
//! rare and at most 256 KiB, so the hub's task writes them itself.
//!
//! Layout: `keys/FP.json` (a person's signed message key) and
//! `messages/TO/FROM-ID.json` (`{"id", "from", "at_ms", "sealed"}`), where
//! `FP`, `TO` and `FROM` are fingerprints as 32 hex digits and `ID` the
//! message id (`[a-z0-9-]`): no name from outside can reach another folder.
//! The bytes are as sealed: nothing on the disk is readable without the
//! recipient's key. A file that does not read back (damaged, edited, a key
//! not its fingerprint's) is left out with a warning.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wzp_proto::voice_message::{valid_message_id, MessageKey};
use wzp_proto::Fingerprint;

use super::{MailChange, Stored};

/// What was on the disk at start.
#[derive(Debug, Default)]
pub struct Restored {
    /// Message keys.
    pub keys: Vec<(Fingerprint, MessageKey)>,
    /// Messages: recipient, and the message with how long ago it was taken.
    pub messages: Vec<(Fingerprint, RestoredMessage)>,
    /// Files left out (unreadable), with why.
    pub skipped: Vec<String>,
}

/// A message read from the disk.
#[derive(Debug)]
pub struct RestoredMessage {
    /// Its id.
    pub id: String,
    /// Who left it.
    pub from: Fingerprint,
    /// How long ago the relay took it.
    pub age: Duration,
    /// The sealed bytes.
    pub sealed: Vec<u8>,
}

impl RestoredMessage {
    /// As the mailboxes keep it, taken `age` before `now`.
    pub fn stored(self, now: Instant) -> Stored {
        Stored {
            id: self.id,
            from: self.from,
            at: now.checked_sub(self.age).unwrap_or(now),
            sealed: self.sealed,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MessageFile {
    id: String,
    from: Fingerprint,
    at_ms: u64,
    #[serde(with = "hex_bytes")]
    sealed: Vec<u8>,
}

/// The writer of the mailboxes' changes.
pub struct MailDisk {
    root: PathBuf,
}

impl MailDisk {
    /// Opens (creating) the folder `dir` and reads what it keeps.
    pub fn open(dir: &Path) -> Result<(MailDisk, Restored)> {
        for sub in ["keys", "messages"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| {
                format!(
                    "voice_message_dir: cannot create {}",
                    dir.join(sub).display()
                )
            })?;
        }
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"")
            .with_context(|| format!("voice_message_dir: cannot write in {}", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
        let restored = read(dir);
        Ok((
            MailDisk {
                root: dir.to_path_buf(),
            },
            restored,
        ))
    }

    /// Writes `changes`, in order (a failure is logged: the message stays
    /// in memory, and is lost only if the relay restarts).
    pub fn apply(&self, changes: Vec<MailChange>) {
        for c in changes {
            if let Err(e) = write(&self.root, &c) {
                tracing::warn!("voice messages on disk: {e:#}");
            }
        }
    }
}

fn fp_name(fp: &Fingerprint) -> String {
    hex::encode(fp.as_bytes())
}

fn fp_of_name(name: &str) -> Option<Fingerprint> {
    let mut b = [0u8; 16];
    hex::decode_to_slice(name, &mut b).ok()?;
    Some(Fingerprint(b))
}

fn message_path(root: &Path, to: &Fingerprint, from: &Fingerprint, id: &str) -> PathBuf {
    root.join("messages")
        .join(fp_name(to))
        .join(format!("{}-{id}.json", fp_name(from)))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes `bytes` to `path` whole: beside it first, then renamed over it.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn write(root: &Path, change: &MailChange) -> Result<()> {
    match change {
        MailChange::Key(fp, key) => write_whole(
            &root.join("keys").join(format!("{}.json", fp_name(fp))),
            &serde_json::to_vec(key)?,
        ),
        MailChange::KeyGone(fp) => {
            let p = root.join("keys").join(format!("{}.json", fp_name(fp)));
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))
        }
        MailChange::Kept(to, m) => {
            if !valid_message_id(&m.id) {
                anyhow::bail!("message id {:?} is not one", m.id);
            }
            let p = message_path(root, to, &m.from, &m.id);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            let age = Instant::now().saturating_duration_since(m.at);
            let file = MessageFile {
                id: m.id.clone(),
                from: m.from,
                at_ms: unix_ms().saturating_sub(age.as_millis() as u64),
                sealed: m.sealed.clone(),
            };
            write_whole(&p, &serde_json::to_vec(&file)?)
        }
        MailChange::Gone(to, id, from) => {
            if !valid_message_id(id) {
                anyhow::bail!("message id {id:?} is not one");
            }
            let p = message_path(root, to, from, id);
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            // An empty mailbox folder goes with its last message.
            if let Some(d) = p.parent() {
                let _ = std::fs::remove_dir(d);
            }
            Ok(())
        }
    }
}

/// Everything readable under `root`.
fn read(root: &Path) -> Restored {
    let mut r = Restored::default();
    let now = unix_ms();
    let entries = |d: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(&d)
            .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    for p in entries(root.join("keys")) {
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let key = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<MessageKey>(&b).ok());
        match (fp_of_name(name), key) {
            (Some(fp), Some(k))
                if k.verify() == Ok(fp) && p.extension().is_some_and(|e| e == "json") =>
            {
                r.keys.push((fp, k))
            }
            _ => r.skipped.push(format!(
                "{}: not a message key of its fingerprint",
                p.display()
            )),
        }
    }
    for d in entries(root.join("messages")) {
        let Some(to) = d.file_name().and_then(|s| s.to_str()).and_then(fp_of_name) else {
            r.skipped.push(format!("{}: not a mailbox", d.display()));
            continue;
        };
        for p in entries(d) {
            let file = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<MessageFile>(&b).ok())
                .filter(|f| valid_message_id(&f.id))
                .filter(|f| p == message_path(root, &to, &f.from, &f.id));
            match file {
                Some(f) => r.messages.push((
                    to,
                    RestoredMessage {
                        id: f.id,
                        from: f.from,
                        age: Duration::from_millis(now.saturating_sub(f.at_ms)),
                        sealed: f.sealed,
                    },
                )),
                None => r
                    .skipped
                    .push(format!("{}: not a voice message", p.display())),
            }
        }
    }
    r
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(s.as_ref()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wzp_proto::Seed;

    fn person(n: u8) -> (Fingerprint, MessageKey) {
        let id = Seed::from_bytes([n; 32]).identity();
        (id.fingerprint(), MessageKey::of(&id))
    }

    #[test]
    fn what_the_hub_changes_is_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, r) = MailDisk::open(dir.path()).unwrap();
        assert!(r.keys.is_empty() && r.messages.is_empty() && r.skipped.is_empty());
        let ((alice, _), (bob, bob_key)) = (person(1), person(2));
        let now = Instant::now();
        let m = |id: &str| Stored {
            id: id.into(),
            from: alice,
            at: now - Duration::from_secs(60),
            sealed: vec![7, 8, 9],
        };
        disk.apply(vec![
            MailChange::Key(bob, bob_key),
            MailChange::Kept(bob, m("m1")),
            MailChange::Kept(bob, m("m2")),
            MailChange::Gone(bob, "m1".into(), alice),
        ]);
        drop(disk);
        let (_, r) = MailDisk::open(dir.path()).unwrap();
        assert_eq!(r.keys, vec![(bob, bob_key)]);
        assert_eq!(r.messages.len(), 1);
        let (to, got) = &r.messages[0];
        assert_eq!(
            (to, got.id.as_str(), got.from, got.sealed.as_slice()),
            (&bob, "m2", alice, &[7u8, 8, 9][..])
        );
        assert!((59..=70).contains(&got.age.as_secs()), "{:?}", got.age);
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    }

    #[test]
    fn damaged_or_foreign_files_are_left_out_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let (_disk, _) = MailDisk::open(dir.path()).unwrap();
        let ((alice, alice_key), (bob, _)) = (person(1), person(2));
        // bob's name on alice's key; noise; a message under another name.
        std::fs::write(
            dir.path()
                .join("keys")
                .join(format!("{}.json", fp_name(&bob))),
            serde_json::to_vec(&alice_key).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("keys").join("zz.json"), b"{").unwrap();
        let mb = dir.path().join("messages").join(fp_name(&bob));
        std::fs::create_dir_all(&mb).unwrap();
        let file = MessageFile {
            id: "m1".into(),
            from: alice,
            at_ms: 1,
            sealed: vec![1],
        };
        std::fs::write(mb.join("renamed.json"), serde_json::to_vec(&file).unwrap()).unwrap();
        std::fs::write(mb.join(format!("{}-m2.json", fp_name(&alice))), b"not json").unwrap();
        std::fs::create_dir_all(dir.path().join("messages").join("not-a-fingerprint")).unwrap();
        let (_, r) = MailDisk::open(dir.path()).unwrap();
        assert!(r.keys.is_empty() && r.messages.is_empty());
        assert_eq!(r.skipped.len(), 5, "{:?}", r.skipped);
        // A folder that cannot be made is an error at start, with which.
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let e = MailDisk::open(&file)
            .err()
            .expect("a file is not a folder")
            .to_string();
        assert!(e.contains("voice_message_dir"), "{e}");
    }
}
