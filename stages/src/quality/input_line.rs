//! The text layer of `adapt-input:` lines ([`super::inputs`]): a line cut
//! into its kind and `key=value` fields, and typed readers that take each
//! field once. Standard library and `wzp_proto` only, so the fuzz build
//! compiles it alone (`fuzz/fuzz_targets/adapt_input_line.rs`).

use std::collections::HashMap;

use wzp_proto::feedback::{FeedbackEntry, BURST_BINS};

/// What an input line starts with (after any label a control plane puts
/// before it).
pub const PREFIX: &str = "adapt-input: ";

/// The `key=value` fields of a line, each taken once.
pub struct Fields<'a> {
    kind: &'a str,
    map: HashMap<&'a str, &'a str>,
}

impl<'a> Fields<'a> {
    /// Cuts `line` (anything before [`PREFIX`] skipped) into its kind and
    /// fields; a field given twice, or a word that is not `key=value`, is
    /// an error.
    pub fn of(line: &'a str) -> Result<Fields<'a>, String> {
        let at = line
            .find(PREFIX)
            .ok_or_else(|| format!("not an input line (no {:?})", PREFIX.trim_end()))?;
        let mut words = line[at + PREFIX.len()..].split_whitespace();
        let kind = words.next().ok_or("an input line with no kind")?;
        let mut map = HashMap::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("{w:?} in a {kind} line is not key=value"))?;
            if map.insert(k, v).is_some() {
                return Err(format!("{k}= twice in a {kind} line"));
            }
        }
        Ok(Fields { kind, map })
    }

    /// The line's kind (its first word).
    pub fn kind(&self) -> &'a str {
        self.kind
    }

    /// The raw value of `key`, taken out (a second take is an error).
    pub fn take(&mut self, key: &str) -> Result<&'a str, String> {
        self.map
            .remove(key)
            .ok_or_else(|| format!("{} line without {key}=", self.kind))
    }

    /// `key`'s value as a number of type `T` (out of `T`'s range: an error).
    pub fn num<T: std::str::FromStr>(&mut self, key: &str) -> Result<T, String> {
        let v = self.take(key)?;
        v.parse().map_err(|_| {
            format!(
                "{key}={v:?} in a {} line is not a number in range",
                self.kind
            )
        })
    }

    /// `key`'s value, `true` or `false`.
    pub fn flag(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key)? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(format!(
                "{key}={v:?} in a {} line: true or false",
                self.kind
            )),
        }
    }

    /// `key`'s value as a number, or `-` for none.
    pub fn maybe<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>, String> {
        if self.map.get(key) == Some(&"-") {
            self.map.remove(key);
            Ok(None)
        } else {
            self.num(key).map(Some)
        }
    }

    /// Every field taken: one left over is an unknown field, an error.
    pub fn done(self) -> Result<(), String> {
        let mut left: Vec<&str> = self.map.keys().copied().collect();
        left.sort_unstable();
        match left.first() {
            None => Ok(()),
            Some(k) => Err(format!("unknown field {k}= in a {} line", self.kind)),
        }
    }

    /// A report entry's fields (`expected`, `received`, `late`, `bursts`
    /// as six counts separated by commas, `max_burst`, `jitter_100us`,
    /// `queue_100us`, `recv_kbps`, `echo_ts`, `echo_hold_ms`); its
    /// `sender_id` is 0 (the lines are about this sender).
    pub fn entry(&mut self) -> Result<FeedbackEntry, String> {
        let bursts_text = self.take("bursts")?;
        let parts: Vec<&str> = bursts_text.split(',').collect();
        if parts.len() != BURST_BINS {
            return Err(format!(
                "bursts={bursts_text:?}: {BURST_BINS} counts separated by commas"
            ));
        }
        let mut bursts = [0u8; BURST_BINS];
        for (b, p) in bursts.iter_mut().zip(&parts) {
            *b = p
                .parse()
                .map_err(|_| format!("bursts={bursts_text:?}: counts are 0..=255"))?;
        }
        let e = FeedbackEntry {
            sender_id: 0,
            expected: self.num("expected")?,
            received: self.num("received")?,
            late: self.num("late")?,
            bursts,
            max_burst: self.num("max_burst")?,
            jitter_100us: self.num("jitter_100us")?,
            queue_delay_100us: self.num("queue_100us")?,
            recv_kbps: self.num("recv_kbps")?,
            echo_ts: self.num("echo_ts")?,
            echo_hold_ms: self.num("echo_hold_ms")?,
        };
        if e.received > e.expected {
            return Err(format!(
                "received={} is more than expected={}",
                e.received, e.expected
            ));
        }
        Ok(e)
    }
}
