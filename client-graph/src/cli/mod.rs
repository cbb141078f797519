//! The subcommands, one file each, and what they share.

pub mod call;
pub mod contacts;
pub mod demo;
pub mod devices;
pub mod direct;
pub mod graph;
pub mod history;
pub mod identity;
pub mod join;
pub mod listen;
pub mod message;
pub mod recovery_words;
pub mod reflect;
pub mod replay;
pub mod run;
pub mod stages;
pub mod vars;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use wzp_engine::prelude::*;

/// An alias as relays take it: 1..=64 bytes, no control characters (a
/// longer one was refused by the relay as a lost connection).
pub fn parse_alias(s: &str) -> Result<String, String> {
    let max = wzp_proto::presence::MAX_ALIAS_LEN;
    if s.trim().is_empty() {
        return Err("is empty; leave --alias out for none".into());
    }
    if s.len() > max {
        return Err(format!("is {} bytes; an alias is at most {max}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err("has a control character".into());
    }
    Ok(s.to_string())
}

/// The relay a command talks to: `--relay`, else `$WZP_RELAY` (set once in
/// a shell's profile, so `wzp-client call alice` needs nothing more).
pub fn relay_address(given: Option<&str>) -> Result<String> {
    if let Some(r) = given {
        return Ok(r.to_string());
    }
    match std::env::var("WZP_RELAY") {
        Ok(r) if !r.trim().is_empty() => Ok(r.trim().to_string()),
        _ => {
            bail!("no relay: give --relay HOST:PORT, or set WZP_RELAY=HOST:PORT in the environment")
        }
    }
}

/// The relays given with `--relay` (each may list several, `A,B`), else
/// those of `WZP_RELAY` (`HOST:PORT`, or several separated by commas), in
/// order; at least one, none given twice.
pub fn relay_addresses(given: &[String]) -> Result<Vec<String>> {
    let from_env;
    let listed: Vec<&str> = if given.is_empty() {
        from_env = relay_address(None)?;
        from_env.split(',').collect()
    } else {
        given.iter().map(String::as_str).collect()
    };
    let mut relays: Vec<String> = Vec::new();
    for r in listed.iter().map(|r| r.trim()) {
        if r.is_empty() {
            bail!("an empty relay address in the list: give HOST:PORT, or several as A,B");
        }
        if relays.iter().any(|x| x == r) {
            bail!("relay {r} is given twice");
        }
        relays.push(r.to_string());
    }
    if relays.is_empty() {
        bail!("no relay: give --relay HOST:PORT, or set WZP_RELAY=HOST:PORT in the environment");
    }
    Ok(relays)
}

/// The `--relay-fingerprint`s given for `count` relays: one per relay in
/// the same order, or none (each then pinned on first use).
pub fn relay_fingerprints(
    given: &[String],
    count: usize,
) -> Result<Vec<Option<wzp_proto::TlsFingerprint>>> {
    let parsed = given
        .iter()
        .map(|f| {
            f.parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("--relay-fingerprint {f}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    if parsed.is_empty() {
        return Ok(vec![None; count]);
    }
    if parsed.len() != count {
        bail!(
            "{} --relay-fingerprint for {count} relays: give one per --relay, in the same order, or none \
             (each relay is then pinned on first use)",
            parsed.len()
        );
    }
    Ok(parsed)
}

pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    wzp_engine::params::parse_duration_flag(s)
}

pub fn parse_sets(set: &[String]) -> Result<BTreeMap<String, String>> {
    set.iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--set {kv:?}: expected NAME=VALUE"))?;
            if k.is_empty() {
                bail!("--set {kv:?}: the name is empty");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

pub fn load(graph: &Path, set: &[String]) -> Result<(GraphSpec, Registry)> {
    let vars = parse_sets(set)?;
    vars::check_file(graph, &vars)?;
    let spec = GraphSpec::load(graph, &vars).map_err(|e| anyhow!("{e}"))?;
    Ok((spec, wzp_stages::registry()))
}

pub fn finish_report(
    report: &wzp_engine::stats::Report,
    room: Option<&serde_json::Value>,
    json: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    if let Some(path) = json {
        crate::call::write_stats_json(report, room, path)?;
    }
    if !quiet {
        print!("{}", report.table());
    }
    Ok(())
}

/// Whether `path` (given with `flag`) can be written, its folder made:
/// checked before a run or a call, not found out at its end. An existing
/// file is left as it is and no new one is left behind.
pub fn check_writable(flag: &str, path: &std::path::Path) -> Result<()> {
    if path.is_dir() {
        bail!("{flag} {}: is a folder; give a file", path.display());
    }
    // A FIFO or a device (/dev/stdout) is the user's choice; opening it to
    // test would block or write.
    if path.exists() && !path.is_file() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow!(
                "{flag} {}: cannot create {}: {e}",
                path.display(),
                dir.display()
            )
        })?;
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| anyhow!("{flag} {}: cannot write it: {e}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn relay_lists_keep_their_order_and_bad_ones_are_refused() {
        assert_eq!(relay_addresses(&given(&["a:1"])).unwrap(), ["a:1"]);
        // clap splits `A,B`; spaces around an entry go.
        assert_eq!(
            relay_addresses(&given(&["b:2", " a:1"])).unwrap(),
            ["b:2", "a:1"]
        );
        for (bad, says) in [
            (&["a:1", "a:1"][..], "given twice"),
            (&["a:1", ""][..], "empty relay address"),
            (&[" "][..], "empty relay address"),
        ] {
            let e = relay_addresses(&given(bad)).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
