//! Which relays this client trusts: a pinned TLS fingerprint (from
//! `--relay-fingerprint` or the known-relays file) or trust on first use,
//! recorded in `~/.wzp/known_relays` and pinned after.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use wzp_proto::TlsFingerprint;
use wzp_stages::net::quic;

/// Default paths under `~/.wzp`. Without a `HOME` there is none: the
/// identity would land in whatever folder the client was started from, and
/// the user's fingerprint change with it.
pub fn wzp_home() -> Result<PathBuf> {
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".wzp")),
        None => bail!(
            "HOME is not set, so there is no ~/.wzp for the identity and known relays; \
             set HOME, or give --identity FILE (and --known-relays FILE)"
        ),
    }
}

/// `given`, else `~/.wzp/NAME`.
pub fn or_home(given: Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => Ok(wzp_home()?.join(name)),
    }
}

/// The `known_relays` file: one `ADDRESS FINGERPRINT` per line, `#` comments.
pub struct KnownRelays {
    pub(crate) path: PathBuf,
    entries: Vec<(String, TlsFingerprint)>,
}

impl KnownRelays {
    pub fn load(path: &Path) -> Result<KnownRelays> {
        let mut entries = Vec::new();
        match wzp_engine::files::read_text(path, wzp_engine::files::MAX_TEXT) {
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
    /// Pinned by `--relay-fingerprint` to another certificate than the file
    /// has (or to one it has none for): recorded after a handshake shows it.
    Given(TlsFingerprint),
    FirstUse,
}

impl Trust {
    /// The trust for `relay`: `--relay-fingerprint` when given (recorded in
    /// the known-relays file once a handshake has shown it, by
    /// [`Trust::confirm`]: a mistyped one must not replace the right one),
    /// else the file's entry, else first use.
    pub fn for_relay(
        relay: &str,
        pinned: Option<TlsFingerprint>,
        known: &mut KnownRelays,
    ) -> Result<Trust> {
        Ok(match (pinned, known.get(relay)) {
            (Some(fp), known) if known != Some(fp) => Trust::Given(fp),
            (Some(fp), _) | (None, Some(fp)) => Trust::Pinned(fp),
            (None, None) => Trust::FirstUse,
        })
    }
}

/// A QUIC client config for one connection attempt under a [`Trust`], and
/// what the handshake showed: on first use, the certificate's fingerprint.
pub struct Dial {
    pub config: quinn::ClientConfig,
    seen: Arc<Mutex<Option<TlsFingerprint>>>,
}

impl Trust {
    /// The client config for one attempt. Live connections (a call's room,
    /// the signal plane) notice a silent relay within seconds rather than
    /// at the relay's 30 s idle timeout: keep-alive 500 ms, idle 3 s (a
    /// restarted relay says so at once with a stateless reset; this covers
    /// one that is simply gone).
    pub fn dial(&self) -> Result<Dial> {
        let seen = Arc::new(Mutex::new(None));
        let mut config = match self {
            Trust::Pinned(fp) | Trust::Given(fp) => quic::client_config(*fp),
            Trust::FirstUse => quic::client_config_first_use(seen.clone()),
        }
        .map_err(|e| anyhow!("{e}"))?;
        let mut transport = quic::transport_config();
        transport.keep_alive_interval(Some(Duration::from_millis(500)));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(3))
                .expect("3 s is a valid idle timeout"),
        ));
        config.transport_config(Arc::new(transport));
        Ok(Dial { config, seen })
    }

    /// The error to show when a handshake with `relay` failed with `text`
    /// because the relay presented another certificate than the pinned one;
    /// `None` for any other failure.
    pub fn pin_mismatch(
        &self,
        relay: &str,
        known: &KnownRelays,
        text: &str,
    ) -> Option<anyhow::Error> {
        match self {
            Trust::Pinned(fp) | Trust::Given(fp) if text.contains("is not the pinned") => Some(anyhow!(
                "the relay at {relay} presented a different certificate than the one pinned ({fp}): {text}\n  \
                 if the relay's identity changed on purpose, accept it with --relay-fingerprint NEW_FINGERPRINT \
                 (the relay prints it at start), or remove its line from {}",
                known.path.display()
            )),
            _ => None,
        }
    }

    /// After a successful handshake: the relay's fingerprint. On first use
    /// it is recorded in `known`, `announce` is given the line to show, and
    /// the trust becomes pinned for the next connection.
    pub fn confirm(
        &mut self,
        dial: &Dial,
        relay: &str,
        known: &mut KnownRelays,
        announce: impl FnOnce(String),
    ) -> Result<TlsFingerprint> {
        match self {
            Trust::Pinned(fp) => Ok(*fp),
            Trust::Given(fp) => {
                let fp = *fp;
                known.set(relay, fp)?;
                *self = Trust::Pinned(fp);
                Ok(fp)
            }
            Trust::FirstUse => {
                let fp = dial
                    .seen
                    .lock()
                    .ok()
                    .and_then(|s| *s)
                    .ok_or_else(|| anyhow!("the relay showed no certificate"))?;
                known.set(relay, fp)?;
                announce(format!(
                    "trusting relay {relay} on first use: {fp} (recorded in {})",
                    known.path.display()
                ));
                *self = Trust::Pinned(fp);
                Ok(fp)
            }
        }
    }
}
