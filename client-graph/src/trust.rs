//! Which relays this client trusts: a pinned TLS fingerprint (from
//! `--relay-fingerprint` or the known-relays file) or trust on first use,
//! recorded in `~/.wzp/known_relays` and pinned after.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use wzp_proto::TlsFingerprint;

/// Default paths under `~/.wzp`.
pub fn wzp_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".wzp")
}

/// The `known_relays` file: one `ADDRESS FINGERPRINT` per line, `#` comments.
pub struct KnownRelays {
    pub(crate) path: PathBuf,
    entries: Vec<(String, TlsFingerprint)>,
}

impl KnownRelays {
    pub fn load(path: &Path) -> Result<KnownRelays> {
        let mut entries = Vec::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let mut parts = line.split_whitespace();
                    let (Some(addr), Some(fp)) = (parts.next(), parts.next()) else {
                        bail!(
                            "{}:{}: expected `ADDRESS FINGERPRINT`",
                            path.display(),
                            n + 1
                        );
                    };
                    let fp: TlsFingerprint = fp.parse().map_err(|e| {
                        anyhow!("{}:{}: bad fingerprint: {e}", path.display(), n + 1)
                    })?;
                    entries.push((addr.to_string(), fp));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        Ok(KnownRelays {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn get(&self, addr: &str) -> Option<TlsFingerprint> {
        self.entries
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, f)| *f)
    }

    /// Records (or replaces) `addr`'s fingerprint and writes the file.
    pub fn set(&mut self, addr: &str, fp: TlsFingerprint) -> Result<()> {
        self.entries.retain(|(a, _)| a != addr);
        self.entries.push((addr.to_string(), fp));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut text = String::from("# wzp relays this client trusts: ADDRESS TLS-FINGERPRINT\n");
        for (a, f) in &self.entries {
            text.push_str(&format!("{a} {f}\n"));
        }
        std::fs::write(&self.path, text).with_context(|| format!("writing {}", self.path.display()))
    }
}

/// How the relay's certificate is checked.
pub enum Trust {
    Pinned(TlsFingerprint),
    FirstUse,
}

impl Trust {
    /// The trust for `relay`: `--relay-fingerprint` when given (recorded in
    /// the known-relays file), else the file's entry, else first use.
    pub fn for_relay(
        relay: &str,
        pinned: Option<TlsFingerprint>,
        known: &mut KnownRelays,
    ) -> Result<Trust> {
        Ok(match (pinned, known.get(relay)) {
            (Some(fp), _) => {
                known.set(relay, fp)?;
                Trust::Pinned(fp)
            }
            (None, Some(fp)) => Trust::Pinned(fp),
            (None, None) => Trust::FirstUse,
        })
    }
}
