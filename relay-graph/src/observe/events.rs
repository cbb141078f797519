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

/// An append-only JSONL file. Events are rare (joins, leaves), so each line
/// is written and flushed under a lock.
pub struct EventLog {
    file: Mutex<File>,
}

impl EventLog {
    pub fn open(path: &Path) -> std::io::Result<EventLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            file: Mutex::new(file),
        })
    }

    pub fn write(&self, ev: &Event<'_>) {
        let Ok(mut line) = serde_json::to_vec(ev) else {
            return;
        };
        line.push(b'\n');
        let mut f = match self.file.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
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
