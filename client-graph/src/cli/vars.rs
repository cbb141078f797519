//! `--set NAME=VALUE` names checked against the graph's placeholders, so a
//! misspelt or stale name is an error instead of silently changing nothing.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use wzp_engine::GraphSpec;

/// Refuses a `--set` name graph `text` (named `file` in errors) has no
/// placeholder for; the error lists the graph's names.
pub fn check_text(text: &str, file: &str, sets: &BTreeMap<String, String>) -> Result<()> {
    if sets.is_empty() {
        return Ok(());
    }
    GraphSpec::check_var_names(text, file, sets.keys().map(String::as_str))
        .map_err(|e| anyhow!("{e}"))
}

/// As [`check_text`] for the graph file at `path`. A file that cannot be
/// read is left to the loader, which says so.
pub fn check_file(path: &Path, sets: &BTreeMap<String, String>) -> Result<()> {
    if sets.is_empty() {
        return Ok(());
    }
    match wzp_engine::files::read_text(path, wzp_engine::files::MAX_TEXT) {
        Ok(text) => check_text(&text, &path.display().to_string(), sets),
        Err(_) => Ok(()),
    }
}
