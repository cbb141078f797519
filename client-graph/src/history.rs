//! The calls this client made and took: `~/.wzp/history.jsonl` (mode
//! 0600), one JSON object a line, appended as each call ends. `wzp-client
//! history` prints it; a call that rang while nobody answered shows as
//! missed.
//!
//! ```json
//! {"at":1796615100,"dir":"in","peer":"3f2a:9c01:77de:0b4e:5a10:c3d2:e8f7:1a6b","alias":"alice","outcome":"answered","secs":125}
//! ```
//!
//! The file is the user's own, but a line may be cut short (a full disk, a
//! crash while writing) or edited by hand: lines that do not parse are
//! skipped and counted, never the end of the listing. It is kept to its last
//! [`KEEP`] calls: past twice that many, an append rewrites it with the
//! newest [`KEEP`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wzp_proto::Fingerprint;

/// Calls kept.
pub const KEEP: usize = 5_000;
/// Largest history file read, bytes (a line is ~150).
const MAX_FILE: u64 = 8 << 20;

/// Which way a call went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// This client called.
    Out,
    /// This client was called.
    In,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was answered and ran (`secs` long).
    Answered,
    /// Incoming: declined here (a key, or `--accept` policy).
    Declined,
    /// Incoming: declined without ringing, the caller being blocked.
    Blocked,
    /// Incoming: it rang, and the caller gave up or the ringing timed out.
    Missed,
    /// Outgoing: the callee declined.
    Rejected,
    /// Outgoing: nobody with that fingerprint was registered.
    NotOnline,
    /// Outgoing: the callee was in another call.
    Busy,
    /// Outgoing: it rang until the relay's timeout.
    NoAnswer,
    /// Outgoing: taken back here before an answer.
    Cancelled,
    /// It failed (a bad handshake, the relay lost, ...).
    Failed,
    /// Incoming: it rang here and another of your devices answered it.
    AnsweredElsewhere,
    /// Incoming: it rang here and another of your devices declined it.
    DeclinedElsewhere,
    /// A voice message (`secs` long): left (outgoing) or fetched (incoming).
    VoiceMessage,
}

impl Outcome {
    /// As `history` prints it.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Declined => "declined",
            Outcome::Blocked => "blocked",
            Outcome::Missed => "MISSED",
            Outcome::Rejected => "rejected",
            Outcome::NotOnline => "not online",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no answer",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
            Outcome::AnsweredElsewhere => "answered elsewhere",
            Outcome::DeclinedElsewhere => "declined elsewhere",
            Outcome::VoiceMessage => "voice message",
        }
    }
}

/// One call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When it began (the offer sent or received), Unix seconds.
    pub at: u64,
    pub dir: Dir,
    pub peer: Fingerprint,
    /// The alias the caller gave (incoming calls), as it gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub outcome: Outcome,
    /// How long an answered call ran, seconds.
    #[serde(default)]
    pub secs: u64,
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where calls are written: a file, or nowhere (`--no-history`).
#[derive(Clone, Debug)]
pub struct History {
    path: Option<PathBuf>,
}

impl History {
    /// Calls go to `path`; `None`: they are not kept.
    pub fn new(path: Option<PathBuf>) -> History {
        History { path }
    }

    /// Appends `entry`. A history that cannot be written is said on stderr
    /// and costs the call nothing.
    pub fn record(&self, entry: &Entry) {
        let Some(path) = &self.path else { return };
        if let Err(e) = append(path, entry) {
            eprintln!("warning: the call is not in the history: {e:#}");
        }
    }
}

fn append(path: &Path, entry: &Entry) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut line = serde_json::to_string(entry).context("writing a history line")?;
    line.push('\n');
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    drop(f);
    // Keep it to its last KEEP calls, rewritten whole when it holds twice
    // as many.
    // (A line is never under 100 bytes: the fingerprint alone is 39.)
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if len > (2 * KEEP * 100) as u64 {
        let (entries, _) = read(path)?;
        if entries.len() > 2 * KEEP {
            rewrite(path, &entries[entries.len() - KEEP..])?;
        }
    }
    Ok(())
}

fn rewrite(path: &Path, entries: &[Entry]) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut text = String::new();
    for e in entries {
        text.push_str(&serde_json::to_string(e).context("writing a history line")?);
        text.push('\n');
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("rewriting {}", path.display()))
}

/// The calls in `path`, oldest first (none there: none yet), and how many
/// lines were skipped for not parsing.
pub fn read(path: &Path) -> Result<(Vec<Entry>, usize)> {
    let text = match wzp_engine::files::read_text(path, MAX_FILE) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(parse(&text))
}

/// The calls in history text, and the lines skipped.
pub fn parse(text: &str) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => entries.push(e),
            Err(_) => skipped += 1,
        }
    }
    (entries, skipped)
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM` (UTC).
pub fn utc(secs: u64) -> String {
    let ((y, m, d), rem) = civil(secs);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

/// `secs` since the Unix epoch as a UTC date (year, month, day) and the
/// seconds into that day.
pub fn civil(secs: u64) -> ((i64, i64, i64), u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    ((y, m, d), rem)
}

/// A duration as `2m05s`, `1h02m`, `45s`.
pub fn span(secs: u64) -> String {
    match secs {
        s if s >= 3_600 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f2a:9c01:77de:0b4e:5a10:c3d2:e8f7:1a6b";

    fn entry(outcome: Outcome, secs: u64) -> Entry {
        Entry {
            at: 1_796_615_100,
            dir: Dir::In,
            peer: A.parse().unwrap(),
            alias: Some("alice".into()),
            outcome,
            secs,
        }
    }

    #[test]
    fn calls_are_appended_privately_and_read_back_in_order() {
        let dir = std::env::temp_dir().join(format!("wzp-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("history.jsonl");
        assert_eq!(read(&path).unwrap(), (vec![], 0), "no file: no calls");
        let h = History::new(Some(path.clone()));
        h.record(&entry(Outcome::Missed, 0));
        h.record(&entry(Outcome::Answered, 125));
        History::new(None).record(&entry(Outcome::Failed, 0));
        let (back, skipped) = read(&path).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(
            back,
            vec![entry(Outcome::Missed, 0), entry(Outcome::Answered, 125)]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn broken_lines_are_skipped_and_counted() {
        let good = serde_json::to_string(&entry(Outcome::Busy, 0)).unwrap();
        let text = format!(
            "{good}\n{{\"at\":1,\"dir\":\"in\"\n\nnot json\n\
             {{\"at\":1,\"dir\":\"sideways\",\"peer\":\"{A}\",\"outcome\":\"busy\"}}\n\
             {{\"at\":1,\"dir\":\"out\",\"peer\":\"12:34\",\"outcome\":\"busy\"}}\n\
             {{\"at\":-1,\"dir\":\"out\",\"peer\":\"{A}\",\"outcome\":\"busy\"}}\n\
             {{\"at\":1,\"dir\":\"out\",\"peer\":\"{A}\",\"outcome\":\"exploded\"}}\n{good}"
        );
        let (entries, skipped) = parse(&text);
        assert_eq!(entries.len(), 2);
        assert_eq!(skipped, 6);
    }

    #[test]
    fn the_file_is_kept_to_its_last_calls() {
        let dir = std::env::temp_dir().join(format!("wzp-history-keep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("history.jsonl");
        let mut e = entry(Outcome::Answered, 0);
        let mut text = String::new();
        for i in 0..2 * KEEP as u64 + 10 {
            e.secs = i;
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, text).unwrap();
        e.secs = 999_999;
        History::new(Some(path.clone())).record(&e);
        let (back, _) = read(&path).unwrap();
        assert_eq!(back.len(), KEEP);
        assert_eq!(back.last().unwrap().secs, 999_999, "the newest kept");
        assert_eq!(back[0].secs, 2 * KEEP as u64 + 10 - KEEP as u64 + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn times_and_spans_read_as_people_write_them() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_796_615_100), "2026-12-07 03:45");
        assert_eq!(utc(4_107_542_400 + 86_399), "2100-03-01 23:59");
        assert_eq!(span(45), "45s");
        assert_eq!(span(125), "2m05s");
        assert_eq!(span(3_720), "1h02m");
    }
}
