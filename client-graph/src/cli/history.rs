//! `wzp-client history`: the calls made and taken, newest last, with the
//! contacts' names (`history.rs` keeps them).

use std::path::PathBuf;

use anyhow::Result;

use crate::contacts::Contacts;
use crate::history::{self, Dir, History, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wzp-client history
      The last 20 calls: when (UTC), which way, who, how it ended, how long.
  wzp-client history --missed
      The calls that rang while nobody answered.
  wzp-client history --all

`call` and `listen` add each call as it ends (`--no-history` keeps one
out). The file is ~/.wzp/history.jsonl (mode 0600), one JSON object a line.";

/// Where `call` and `listen` keep their calls.
#[derive(clap::Args, Clone, Debug)]
pub struct HistoryArgs {
    /// History file. Default ~/.wzp/history.jsonl.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Keep no record of this command's calls.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
}

impl HistoryArgs {
    pub fn open(&self) -> Result<History> {
        if self.no_history {
            return Ok(History::new(None));
        }
        Ok(History::new(Some(history_path(self.history.clone())?)))
    }
}

fn history_path(given: Option<PathBuf>) -> Result<PathBuf> {
    crate::trust::or_home(given, "history.jsonl")
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// History file. Default ~/.wzp/history.jsonl.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Contacts file, for names. Default ~/.wzp/contacts.toml.
    #[arg(long)]
    pub contacts: Option<PathBuf>,
    /// How many of the newest calls (1 or more).
    #[arg(long, default_value_t = 20, conflicts_with = "all",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Every call kept.
    #[arg(long)]
    pub all: bool,
    /// Only calls that rang unanswered here.
    #[arg(long)]
    pub missed: bool,
}

pub fn history_cmd(args: ShowArgs) -> Result<()> {
    let path = history_path(args.history)?;
    let (entries, skipped) = history::read(&path)?;
    let contacts = Contacts::load(&super::contacts::contacts_path(args.contacts)?)?;
    let chosen: Vec<_> = entries
        .iter()
        .filter(|e| !args.missed || e.outcome == Outcome::Missed)
        .collect();
    let shown = if args.all {
        &chosen[..]
    } else {
        &chosen[chosen.len().saturating_sub(args.limit as usize)..]
    };
    if shown.is_empty() {
        println!(
            "no {}calls in {}",
            if args.missed { "missed " } else { "" },
            path.display()
        );
    }
    for e in shown {
        let who = match (contacts.by_fingerprint(&e.peer), &e.alias) {
            (Some(c), _) => format!("{} ({})", c.name, e.peer),
            (None, Some(a)) => format!("{} (says \"{}\")", e.peer, crate::lookalike::reveal(a)),
            (None, None) => e.peer.to_string(),
        };
        let long = if matches!(e.outcome, Outcome::Answered | Outcome::VoiceMessage) {
            format!("  {}", history::span(e.secs))
        } else {
            String::new()
        };
        println!(
            "{} UTC  {}  {who}  {}{long}",
            history::utc(e.at),
            match e.dir {
                Dir::Out => "out",
                Dir::In => "in ",
            },
            e.outcome.word()
        );
    }
    if skipped > 0 {
        eprintln!(
            "warning: {skipped} line(s) of {} are not calls and were skipped",
            path.display()
        );
    }
    Ok(())
}
