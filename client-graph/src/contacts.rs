//! The people this client calls by name: `~/.wzp/contacts.toml`.
//!
//! A contact is a name, a fingerprint and whether the two of you compared
//! the SAS on a call (`verified`). `wzp-client call NAME` dials a contact;
//! `wzp-client listen` (by default) shares its address for a direct path
//! only with callers who are contacts, and answers everyone else through
//! the relay alone, so a stranger who knows your fingerprint never learns
//! where you are. An offer whose alias is a contact's name but whose
//! fingerprint is not that contact's is announced as such: the alias is the
//! caller's own claim, the fingerprint is proven.
//!
//! A blocked fingerprint's calls are declined by `listen` without ringing
//! (the caller is told "rejected", as for any decline).
//!
//! ```toml
//! [[contact]]
//! name = "alice"
//! fingerprint = "3f2a:9c01:77de:0b4e:5a10:c3d2:e8f7:1a6b"
//! verified = true
//!
//! [[blocked]]
//! fingerprint = "9c4e:0d11:5b2a:77f0:e3c8:1a90:4d6b:22e5"
//! note = "calls at night"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use wzp_proto::Fingerprint;

use crate::lookalike;

/// Longest contact name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Most contacts a file may hold.
pub const MAX_CONTACTS: usize = 10_000;

/// One contact.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// What you call them by (1..=64 printable characters; never something
    /// that reads as a fingerprint).
    pub name: String,
    /// Their identity.
    pub fingerprint: Fingerprint,
    /// The SAS was compared on a call with them.
    #[serde(default)]
    pub verified: bool,
}

/// A fingerprint whose calls are declined without ringing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Blocked {
    pub fingerprint: Fingerprint,
    /// Why, for yourself (at most [`MAX_NOTE_CHARS`] printable characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// Longest note on a blocked fingerprint, in characters.
pub const MAX_NOTE_CHARS: usize = 200;

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    contact: Vec<Contact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    blocked: Vec<Blocked>,
}

/// The contacts file, as read.
#[derive(Debug)]
pub struct Contacts {
    path: PathBuf,
    list: Vec<Contact>,
    blocked: Vec<Blocked>,
}

/// Whether `note` may go on a blocked fingerprint; why not otherwise.
fn check_note(note: &str) -> Result<(), String> {
    if note.chars().count() > MAX_NOTE_CHARS || note.chars().any(char::is_control) {
        return Err(format!(
            "note {note:?}: at most {MAX_NOTE_CHARS} printable characters"
        ));
    }
    Ok(())
}

/// Whether `name` may name a contact; why not otherwise.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(format!(
            "contact name {name:?}: 1..={MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(format!(
            "contact name {name:?}: printable characters, no space at either end"
        ));
    }
    if name.parse::<Fingerprint>().is_ok() {
        return Err(format!(
            "contact name {name:?} reads as a fingerprint; choose a name that does not"
        ));
    }
    Ok(())
}

impl Contacts {
    /// An empty list that saves to `path`.
    pub fn empty(path: &Path) -> Contacts {
        Contacts {
            path: path.to_path_buf(),
            list: Vec::new(),
            blocked: Vec::new(),
        }
    }

    /// Reads `path` (none there: no contacts yet).
    pub fn load(path: &Path) -> Result<Contacts> {
        match wzp_engine::files::read_text(path, wzp_engine::files::MAX_TEXT) {
            Ok(text) => Contacts::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contacts::empty(path)),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Parses contacts text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Contacts> {
        let file: File =
            toml::from_str(text).map_err(|e| anyhow!("{}: {}", path.display(), e.message()))?;
        let mut c = Contacts::empty(path);
        if file.contact.len() > MAX_CONTACTS || file.blocked.len() > MAX_CONTACTS {
            bail!(
                "{}: {} contacts and {} blocked; at most {MAX_CONTACTS} of each",
                path.display(),
                file.contact.len(),
                file.blocked.len()
            );
        }
        for b in file.blocked {
            check_note(&b.note).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            if c.is_blocked(&b.fingerprint).is_some() {
                bail!("{}: {} is blocked twice", path.display(), b.fingerprint);
            }
            c.blocked.push(b);
        }
        for contact in file.contact {
            c.insert(contact)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        }
        Ok(c)
    }

    fn insert(&mut self, contact: Contact) -> Result<(), String> {
        check_name(&contact.name)?;
        if let Some(same) = self.by_name(&contact.name) {
            return Err(format!(
                "the name {:?} is taken (by {})",
                contact.name, same.fingerprint
            ));
        }
        if let Some(same) = self.by_fingerprint(&contact.fingerprint) {
            return Err(format!(
                "{} is already a contact, as {:?}",
                contact.fingerprint, same.name
            ));
        }
        self.list.push(contact);
        Ok(())
    }

    /// Every contact, in the file's order.
    pub fn list(&self) -> &[Contact] {
        &self.list
    }

    /// Every blocked fingerprint, in the file's order.
    pub fn blocked(&self) -> &[Blocked] {
        &self.blocked
    }

    /// `fp`'s entry if it is blocked.
    pub fn is_blocked(&self, fp: &Fingerprint) -> Option<&Blocked> {
        self.blocked.iter().find(|b| b.fingerprint == *fp)
    }

    /// Blocks `fp` (with `note`) and saves the file; false if it already
    /// was (the note then changes).
    pub fn block(&mut self, fp: Fingerprint, note: &str) -> Result<bool> {
        check_note(note).map_err(|e| anyhow!("{e}"))?;
        let new = match self.blocked.iter_mut().find(|b| b.fingerprint == fp) {
            Some(b) => {
                b.note = note.to_string();
                false
            }
            None => {
                if self.blocked.len() >= MAX_CONTACTS {
                    bail!("{MAX_CONTACTS} fingerprints are blocked already");
                }
                self.blocked.push(Blocked {
                    fingerprint: fp,
                    note: note.to_string(),
                });
                true
            }
        };
        self.save()?;
        Ok(new)
    }

    /// Unblocks `fp` and saves the file; false if it was not blocked.
    pub fn unblock(&mut self, fp: &Fingerprint) -> Result<bool> {
        let before = self.blocked.len();
        self.blocked.retain(|b| b.fingerprint != *fp);
        if self.blocked.len() == before {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    /// The contact named `name` (names compare without regard to case).
    pub fn by_name(&self, name: &str) -> Option<&Contact> {
        let name = name.to_lowercase();
        self.list.iter().find(|c| c.name.to_lowercase() == name)
    }

    /// The contact with fingerprint `fp`.
    pub fn by_fingerprint(&self, fp: &Fingerprint) -> Option<&Contact> {
        self.list.iter().find(|c| c.fingerprint == *fp)
    }

    /// Who `who` means: a fingerprint as written, else a contact's name.
    pub fn resolve(&self, who: &str) -> Result<(Fingerprint, Option<&Contact>)> {
        if let Ok(fp) = who.parse::<Fingerprint>() {
            return Ok((fp, self.by_fingerprint(&fp)));
        }
        match self.by_name(who) {
            Some(c) => Ok((c.fingerprint, Some(c))),
            None => Err(anyhow!(
                "{who:?} is neither a fingerprint (xxxx:xxxx:... , 32 hex digits) nor a contact \
                 in {} (`wzp-client contacts list` shows them; `wzp-client contacts add NAME \
                 FINGERPRINT` adds one)",
                self.path.display()
            )),
        }
    }

    /// The contact a caller claims to be by its `alias` while its proven
    /// fingerprint `fp` is not that contact's: someone else using a name
    /// you know, or one that looks like it (`\u{430}lice` for `alice`;
    /// [`crate::lookalike`]).
    pub fn impersonated(&self, alias: Option<&str>, fp: &Fingerprint) -> Option<&Contact> {
        let alias = alias?.trim();
        if let Some(c) = self.by_name(alias) {
            return (c.fingerprint != *fp).then_some(c);
        }
        // The caller itself may be a contact whose name looks like
        // another's: then it is who it is.
        if self
            .by_fingerprint(fp)
            .is_some_and(|c| lookalike::look_alike(&c.name, alias))
        {
            return None;
        }
        self.list
            .iter()
            .find(|c| c.fingerprint != *fp && lookalike::look_alike(&c.name, alias))
    }

    /// Adds a contact and saves the file. A name that only looks like a
    /// contact's (`b0b` beside `bob`) is refused too: the warning for a
    /// caller borrowing a name could not tell them apart.
    pub fn add(&mut self, name: &str, fingerprint: Fingerprint, verified: bool) -> Result<()> {
        if let Some(like) = self.list.iter().find(|c| {
            c.name.to_lowercase() != name.to_lowercase() && lookalike::look_alike(&c.name, name)
        }) {
            bail!(
                "the name {} looks like your contact {}'s ({}); choose one that does not",
                lookalike::reveal(name),
                lookalike::reveal(&like.name),
                like.fingerprint
            );
        }
        self.insert(Contact {
            name: name.to_string(),
            fingerprint,
            verified,
        })
        .map_err(|e| anyhow!("{e}"))?;
        self.save()
    }

    /// Where the contact named `name` is in the list.
    fn index_of(&self, name: &str) -> Result<usize> {
        let lower = name.to_lowercase();
        self.list
            .iter()
            .position(|c| c.name.to_lowercase() == lower)
            .ok_or_else(|| anyhow!("no contact named {name:?} in {}", self.path.display()))
    }

    /// Removes the contact named `name` and saves the file.
    pub fn remove(&mut self, name: &str) -> Result<Contact> {
        let at = self.index_of(name)?;
        let gone = self.list.remove(at);
        self.save()?;
        Ok(gone)
    }

    /// Marks the contact named `name` verified (or not) and saves the file.
    pub fn set_verified(&mut self, name: &str, verified: bool) -> Result<&Contact> {
        let at = self.index_of(name)?;
        self.list[at].verified = verified;
        self.save()?;
        Ok(&self.list[at])
    }

    /// Writes the file whole (a temporary file renamed over it, mode 0600:
    /// who you call is nobody else's business).
    pub fn save(&self) -> Result<()> {
        let text = toml::to_string(&File {
            contact: self.list.clone(),
            blocked: self.blocked.clone(),
        })
        .context("writing the contacts")?;
        let text = format!(
            "# wzp contacts: `wzp-client contacts add NAME FINGERPRINT`, `call NAME`.\n\
             # verified = true: the SAS was compared on a call with them.\n\
             # [[blocked]]: their calls are declined without ringing.\n\n{text}"
        );
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = self.path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f2a:9c01:77de:0b4e:5a10:c3d2:e8f7:1a6b";
    const B: &str = "0000:1111:2222:3333:4444:5555:6666:7777";

    fn fp(s: &str) -> Fingerprint {
        s.parse().unwrap()
    }

    fn parse(text: &str) -> Result<Contacts> {
        Contacts::parse(text, Path::new("contacts.toml"))
    }

    #[test]
    fn names_and_fingerprints_resolve_and_a_borrowed_name_is_caught() {
        let c = parse(&format!(
            "[[contact]]\nname = \"Alice\"\nfingerprint = \"{A}\"\nverified = true\n\
             [[contact]]\nname = \"bob\"\nfingerprint = \"{B}\"\n"
        ))
        .unwrap();
        assert_eq!(c.list().len(), 2);
        let (f, who) = c.resolve("alice").unwrap();
        assert_eq!(f, fp(A));
        assert!(who.unwrap().verified, "names compare without case");
        let (f, who) = c.resolve(B).unwrap();
        assert_eq!((f, who.map(|c| c.name.as_str())), (fp(B), Some("bob")));
        let stranger = "9999:9999:9999:9999:9999:9999:9999:9999";
        let (f, who) = c.resolve(stranger).unwrap();
        assert_eq!((f, who), (fp(stranger), None));
        let err = c.resolve("carol").unwrap_err().to_string();
        assert!(err.contains("contacts list"), "{err}");
        // A caller whose alias is a contact's name but whose proven
        // fingerprint is someone else's.
        assert_eq!(
            c.impersonated(Some(" alice "), &fp(stranger))
                .map(|c| &c.name[..]),
            Some("Alice")
        );
        assert_eq!(c.impersonated(Some("alice"), &fp(A)), None, "alice herself");
        assert_eq!(c.impersonated(Some("carol"), &fp(stranger)), None);
        assert_eq!(c.impersonated(None, &fp(stranger)), None);
        // A name that only looks like a contact's.
        for alias in ["\u{430}lice", "a\u{200b}lice", "ALICE", "a1ice"] {
            assert_eq!(
                c.impersonated(Some(alias), &fp(stranger))
                    .map(|c| &c.name[..]),
                Some("Alice"),
                "{alias:?}"
            );
            assert_eq!(c.impersonated(Some(alias), &fp(A)), None, "alice herself");
        }
        assert_eq!(
            c.impersonated(Some("b0b"), &fp(stranger))
                .map(|c| &c.name[..]),
            Some("bob")
        );
        // Bob calling himself by a name like alice's is bob still... but a
        // borrowed name all the same.
        assert_eq!(
            c.impersonated(Some("\u{430}lice"), &fp(B))
                .map(|c| &c.name[..]),
            Some("Alice")
        );
    }

    #[test]
    fn blocked_fingerprints_are_kept_noted_and_taken_back() {
        let dir = std::env::temp_dir().join(format!("wzp-contacts-block-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("contacts.toml");
        let mut c = Contacts::load(&path).unwrap();
        c.add("alice", fp(A), false).unwrap();
        assert!(c.block(fp(B), "calls at night").unwrap());
        assert!(!c.block(fp(B), "calls at 3 am").unwrap(), "blocked already");
        assert!(c.block(fp(A), "").unwrap(), "a contact may be blocked too");
        assert!(c.block(fp(B), &"x".repeat(201)).is_err());
        assert!(c.block(fp(B), "a\nb").is_err());
        let back = Contacts::load(&path).unwrap();
        assert_eq!(back.is_blocked(&fp(B)).unwrap().note, "calls at 3 am");
        assert!(back.is_blocked(&fp(A)).is_some());
        assert_eq!(back.list().len(), 1, "alice stays a contact");
        let mut back = back;
        assert!(back.unblock(&fp(A)).unwrap());
        assert!(!back.unblock(&fp(A)).unwrap());
        let again = Contacts::load(&path).unwrap();
        assert!(again.is_blocked(&fp(A)).is_none());
        assert_eq!(again.blocked().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_name_that_looks_like_a_contacts_is_refused_when_added() {
        let dir = std::env::temp_dir().join(format!("wzp-contacts-like-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Contacts::load(&dir.join("contacts.toml")).unwrap();
        c.add("bob", fp(A), false).unwrap();
        let err = c.add("b0b", fp(B), false).unwrap_err().to_string();
        assert!(err.contains("looks like your contact bob's"), "{err}");
        let err = c.add("\u{432}ob", fp(B), false).map(|_| ()).err();
        assert!(err.is_none(), "a Cyrillic ve does not read as b: {err:?}");
        let err = c
            .add(
                "b\u{43e}b",
                "0000:0000:0000:0000:0000:0000:0000:0001".parse().unwrap(),
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b\\u{43e}b"),
            "the look-alike is shown as one: {err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_contacts_files_are_refused_with_the_reason() {
        let long = "x".repeat(65);
        let cases: Vec<(String, &str)> = vec![
            ("[[contact]]\nname = \"a\"\n".into(), "missing field `fingerprint`"),
            (format!("[[contact]]\nname = \"a\"\nfingerprint = \"{A}\"\nnick = \"b\"\n"), "unknown field `nick`"),
            ("[[contact]]\nname = \"a\"\nfingerprint = \"zz\"\n".into(), "fingerprint"),
            (format!("[[contact]]\nname = \"\"\nfingerprint = \"{A}\"\n"), "1..=64"),
            (format!("[[contact]]\nname = \"{long}\"\nfingerprint = \"{A}\"\n"), "1..=64"),
            (format!("[[contact]]\nname = \"a\\u0007\"\nfingerprint = \"{A}\"\n"), "printable"),
            (format!("[[contact]]\nname = \" a\"\nfingerprint = \"{A}\"\n"), "no space"),
            (format!("[[contact]]\nname = \"{B}\"\nfingerprint = \"{A}\"\n"), "reads as a fingerprint"),
            (
                format!("[[contact]]\nname = \"a\"\nfingerprint = \"{A}\"\n[[contact]]\nname = \"A\"\nfingerprint = \"{B}\"\n"),
                "is taken",
            ),
            (
                format!("[[contact]]\nname = \"a\"\nfingerprint = \"{A}\"\n[[contact]]\nname = \"b\"\nfingerprint = \"{A}\"\n"),
                "already a contact",
            ),
            ("contact = 3\n".into(), "invalid type"),
            (format!("[[blocked]]\nfingerprint = \"{A}\"\n[[blocked]]\nfingerprint = \"{A}\"\n"), "blocked twice"),
            (format!("[[blocked]]\nfingerprint = \"{A}\"\nnote = \"a\\u0007\"\n"), "printable"),
            (format!("[[blocked]]\nfingerprint = \"{A}\"\nwhy = \"x\"\n"), "unknown field `why`"),
            ("[[blocked]]\nnote = \"x\"\n".into(), "missing field `fingerprint`"),
            ("[[contact\n".into(), "contacts.toml"),
        ];
        for (text, why) in cases {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains("contacts.toml"), "names the file: {err}");
        }
        assert!(parse("").unwrap().list().is_empty());
    }

    #[test]
    fn the_file_is_written_whole_private_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("wzp-contacts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("contacts.toml");
        let mut c = Contacts::load(&path).unwrap();
        assert!(c.list().is_empty(), "no file: no contacts");
        c.add("alice", fp(A), false).unwrap();
        c.add("bob", fp(B), true).unwrap();
        assert!(c.add("ALICE", fp(B), false).is_err(), "name taken");
        c.set_verified("Alice", true).unwrap();
        assert_eq!(c.remove("bob").unwrap().fingerprint, fp(B));
        assert!(c.remove("bob").is_err());
        let back = Contacts::load(&path).unwrap();
        assert_eq!(
            back.list(),
            &[Contact {
                name: "alice".into(),
                fingerprint: fp(A),
                verified: true
            }]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!path.with_extension("toml.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
