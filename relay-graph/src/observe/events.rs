//! `--event-log FILE`: one JSON object per line for each join, leave and
//! refusal, for protocol analysis after the fact.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// One event.
#[derive(Serialize, Debug, Default)]
pub struct Event<'a> {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// `join`, `leave` or `refused`.
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Why (refusals, leaves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Members of the room after the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
}

/// An append-only JSONL file, or none. Events are rare (joins, leaves), so
/// each line is written and flushed under a lock.
///
/// A reload opens the file again ([`EventLog::reopen`]): after a log
/// rotation moved it away, lines go to a new file at the configured path.
#[derive(Default)]
pub struct EventLog {
    file: Mutex<Option<File>>,
}

/// Opens `path` for appending, creating it.
fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl EventLog {
    /// An event log writing to `path`.
    pub fn open(path: &Path) -> std::io::Result<EventLog> {
        Ok(EventLog {
            file: Mutex::new(Some(append(path)?)),
        })
    }

    /// Writes to `path` from now on (opened anew, so a file a rotation
    /// moved away is left to it), or to no file with `None`. If `path`
    /// cannot be opened, the file written so far stays and the error is
    /// returned.
    pub fn reopen(&self, path: Option<&Path>) -> std::io::Result<()> {
        let file = path.map(append).transpose()?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
        Ok(())
    }

    pub fn write(&self, ev: &Event<'_>) {
        let Ok(mut line) = serde_json::to_vec(ev) else {
            return;
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = f.as_mut() else {
            return;
        };
        if let Err(e) = f.write_all(&line).and_then(|_| f.flush()) {
            tracing::warn!("event log write failed: {e}");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(room: &str) -> Event<'_> {
        Event {
            ts_ms: 1,
            event: "join",
            room: Some(room),
            ..Default::default()
        }
    }

    fn rooms_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["room"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn a_reopen_after_a_rotation_writes_a_new_file_and_a_failed_one_keeps_the_old() {
        let dir = std::env::temp_dir().join(format!("wzp-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let rotated = dir.join("events.jsonl.1");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);

        let log = EventLog::open(&path).unwrap();
        log.write(&join("before"));
        // logrotate's move, then the reload's reopen.
        std::fs::rename(&path, &rotated).unwrap();
        log.write(&join("moved"));
        log.reopen(Some(&path)).unwrap();
        log.write(&join("after"));
        assert_eq!(rooms_in(&rotated), ["before", "moved"]);
        assert_eq!(rooms_in(&path), ["after"]);

        // A path that cannot be opened: refused, the open file stays.
        let bad = dir.join("no-such-dir").join("events.jsonl");
        assert!(log.reopen(Some(&bad)).is_err());
        log.write(&join("still"));
        assert_eq!(rooms_in(&path), ["after", "still"]);

        // Turned off: nothing written; a closed log writes nothing either.
        log.reopen(None).unwrap();
        log.write(&join("off"));
        EventLog::default().write(&join("nowhere"));
        assert_eq!(rooms_in(&path), ["after", "still"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
