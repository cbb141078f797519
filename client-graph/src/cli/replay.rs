//! `wzp-client replay-adapt LOG`: a call's quality-controller decisions,
//! taken again off line from the inputs it logged (`--set adapt_log=true`;
//! `wzp_stages::quality::inputs`).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use wzp_stages::quality::inputs::{parse_line, replay, InputRecord, PREFIX};
use wzp_stages::quality::journal::{decision_of_line, Entry};

pub const EXAMPLES: &str = "\
Examples:
  wzp-client join --relay 127.0.0.1:4433 --room test --input talk.wav --set adapt_log=true > call.log
      A call that prints its controller's inputs (`adapt-input:` lines) with
      its decisions (`adapt:` lines).
  wzp-client replay-adapt call.log
      Its decisions, taken again by a fresh controller from those inputs.
  wzp-client replay-adapt --check call.log
      The same, compared with the decisions the call printed: exit status 1
      when they differ (a controller change that moves a decision shows here).
  wzp-client replay-adapt --set random_fec=false --set hold_budget_ms=80 call.log
      What the call would have decided with another config (up to the first
      decision that moves: later inputs were shaped by the call's own).
  wzp-client run graphs/loopback.toml --set loss=20 --set adapt_log=true | wzp-client replay-adapt --check -
      The loopback's, from standard input.";

#[derive(Args)]
pub struct ReplayArgs {
    /// A call's printed output holding its `adapt-input:` lines (and its
    /// `adapt:` decision lines); `-` reads standard input.
    #[arg(value_name = "LOG")]
    pub file: PathBuf,
    /// Compare the decisions taken again with the `adapt:` lines of the log;
    /// exit status 1 when they differ.
    #[arg(long)]
    pub check: bool,
    /// Replay with a field of the controller's config (the log's `start`
    /// line) changed: what the call would have decided with, e.g.,
    /// `random_fec=false` or `hold_budget_ms=80` (repeatable). Valid up to
    /// the first decision it moves: the inputs after it were shaped by the
    /// call's own decisions.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
}

/// The `start` line with the `--set` fields changed (each must be one of
/// its fields; the parser then checks the values).
fn with_sets(line: &str, sets: &[(String, String)]) -> Result<String> {
    let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
    for (key, value) in sets {
        let prefix = format!("{key}=");
        let w = words
            .iter_mut()
            .find(|w| w.starts_with(&prefix))
            .ok_or_else(|| {
                let fields: Vec<&str> = line
                    .split_whitespace()
                    .filter_map(|w| w.split_once('=').map(|(k, _)| k))
                    .filter(|&k| k != "at_ns")
                    .collect();
                anyhow!(
                    "--set {key}: the controller's config has no such field; it has: {}",
                    fields.join(", ")
                )
            })?;
        *w = format!("{key}={value}");
    }
    Ok(words.join(" "))
}

/// What a log holds: the inputs, the decisions it printed, and the time of
/// its last decision.
struct Log {
    inputs: Vec<InputRecord>,
    decisions: Vec<String>,
    last_decision_ns: u64,
}

fn read_log(r: impl Read, name: &str, sets: &[(String, String)]) -> Result<Log> {
    let mut log = Log {
        inputs: Vec::new(),
        decisions: Vec::new(),
        last_decision_ns: 0,
    };
    for (n, line) in BufReader::new(r).lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.contains(PREFIX) {
            let start = log.inputs.is_empty() && line.contains(&format!("{PREFIX}start "));
            let line = if start && !sets.is_empty() {
                with_sets(&line, sets)?
            } else {
                line
            };
            let input = parse_line(&line).map_err(|e| anyhow!("{name}:{}: {e}", n + 1))?;
            log.inputs.push(input);
        } else if let Some(d) = decision_of_line(&line) {
            // "... at 12.34 s": the cycle it was taken on, to 10 ms.
            let secs = d
                .rsplit(" at ")
                .next()
                .and_then(|t| t.strip_suffix(" s"))
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| anyhow!("{name}:{}: a decision line with no time", n + 1))?;
            log.last_decision_ns = log.last_decision_ns.max((secs * 1e9).round() as u64);
            log.decisions.push(d);
        }
    }
    Ok(log)
}

pub fn replay_cmd(args: ReplayArgs) -> Result<i32> {
    let name = args.file.display().to_string();
    let sets = args
        .set
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty() && !v.contains(char::is_whitespace))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--set {kv:?}: FIELD=VALUE, e.g. --set random_fec=false"))
        })
        .collect::<Result<Vec<_>>>()?;
    let log = if name == "-" {
        read_log(std::io::stdin().lock(), "standard input", &sets)?
    } else {
        let f = std::fs::File::open(&args.file).with_context(|| format!("opening {name}"))?;
        read_log(f, &name, &sets)?
    };
    if log.inputs.is_empty() {
        bail!(
            "{name} holds no `adapt-input:` lines: run the call with `--set adapt_log=true` (and without --quiet for `wzp-client run`)"
        );
    }
    // Up to the last printed decision's cycle (its time is to 10 ms, the
    // cycle 20 ms), so a decision taken on a timer after the last input is
    // taken again too.
    let until = log.last_decision_ns + 10_000_000;
    let decisions = replay(&log.inputs, until).map_err(|e| anyhow!("{name}: {e}"))?;
    let replayed: Vec<String> = decisions
        .iter()
        .map(|d| Entry::unread(d.at_ns, d.reason, d.settings).summary())
        .collect();
    for d in &replayed {
        println!("{d}");
    }
    if !args.check {
        return Ok(0);
    }
    if log.decisions.is_empty() {
        bail!("--check: {name} holds no `adapt:` decision lines to compare with");
    }
    let first_diff = replayed
        .iter()
        .zip(&log.decisions)
        .position(|(a, b)| a != b);
    match first_diff {
        None if replayed.len() == log.decisions.len() => {
            println!(
                "replay-adapt: {} decisions taken again from {} inputs; the same as the log's",
                replayed.len(),
                log.inputs.len()
            );
            Ok(0)
        }
        None => {
            eprintln!(
                "replay-adapt: the replay took {} decisions, the log printed {}; the first {} agree",
                replayed.len(),
                log.decisions.len(),
                replayed.len().min(log.decisions.len())
            );
            Ok(1)
        }
        Some(i) => {
            eprintln!(
                "replay-adapt: decision {} differs:\n  log:    {}\n  replay: {}\n(a journal that dropped records shows as `journal_dropped` in the adapt stage's counters)",
                i + 1,
                log.decisions[i],
                replayed[i]
            );
            Ok(1)
        }
    }
}
