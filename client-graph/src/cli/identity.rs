//! `wzp-client identity`: show this client's fingerprint (creating the
//! identity on first use), back the identity up as 24 BIP39 words, or
//! restore it from them.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use wzp_proto::identity::IdentityError;
use wzp_proto::Seed;

use crate::trust::{or_home, wzp_home};

pub const EXAMPLES: &str = "\
Examples:
  wzp-client identity
      Print your fingerprint (xxxx:xxxx:...), the name others call you by;
      creates ~/.wzp/identity on first use.
  wzp-client identity backup > words.txt
      Print the 24 recovery words of ~/.wzp/identity. Keep them offline: they
      are the identity.
  wzp-client identity restore --identity ~/.wzp/identity < words.txt
      Restore the identity from its 24 words (or type them, then Ctrl-D).
  wzp-client identity restore --identity ~/.wzp/identity --force < words.txt
      Replace a different identity already in that file.";

#[derive(clap::Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    pub command: Option<IdentityCommand>,
    /// Identity seed file (mode 0600). Default ~/.wzp/identity, as `join` uses.
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Print the identity's 24 BIP39 recovery words.
    #[command(after_help = EXAMPLES)]
    Backup,
    /// Read 24 recovery words from stdin and write the identity to --identity FILE.
    #[command(after_help = EXAMPLES)]
    Restore {
        /// Replace a different identity already in the file.
        #[arg(long)]
        force: bool,
    },
}

pub fn identity_cmd(args: IdentityArgs) -> Result<()> {
    match args.command {
        None => {
            let path = or_home(args.identity, "identity")?;
            show(&path)
        }
        Some(IdentityCommand::Backup) => {
            let path = or_home(args.identity, "identity")?;
            backup(&path)
        }
        Some(IdentityCommand::Restore { force }) => {
            let path = args.identity.ok_or_else(|| {
                anyhow!(
                    "identity restore needs --identity FILE (e.g. --identity {}), so the words go where you mean them to",
                    wzp_home().map(|h| h.join("identity")).unwrap_or_else(|_| "FILE".into()).display()
                )
            })?;
            let mut words = String::new();
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("type the 24 recovery words, then Ctrl-D:");
            }
            stdin
                .lock()
                .read_to_string(&mut words)
                .context("reading the recovery words from stdin")?;
            restore(&path, &words, force)
        }
    }
}

fn show(path: &Path) -> Result<()> {
    let existed = path.exists();
    let seed = Seed::load_or_create(path).map_err(|e| anyhow!("identity: {e}"))?;
    if !existed {
        eprintln!(
            "created a new identity in {}; back it up with `wzp-client identity backup --identity {}`",
            path.display(),
            path.display()
        );
    }
    println!("{}", seed.identity().fingerprint());
    Ok(())
}

fn backup(path: &Path) -> Result<()> {
    let seed = load_existing(path)?;
    // The words must get out whole: a full disk is an error, not a panic
    // or (worse) a backup that looks written.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", seed.to_mnemonic().as_str())
            .and_then(|()| out.flush())
            .map_err(|e| anyhow::anyhow!("writing the recovery words to standard output: {e}"))?;
    }
    eprintln!(
        "these 24 words are identity {}: anyone who has them can be you; keep them offline",
        seed.identity().fingerprint()
    );
    Ok(())
}

fn load_existing(path: &Path) -> Result<Seed> {
    Seed::load(path).map_err(|e| match e {
        IdentityError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow!(
                "no identity in {}: run `wzp-client identity --identity {}` to create one, or `wzp-client identity restore --identity {}` to restore one",
                path.display(),
                path.display(),
                path.display()
            )
        }
        e => anyhow!("identity: {e}"),
    })
}

fn restore(path: &Path, words: &str, force: bool) -> Result<()> {
    let seed = super::recovery_words::parse(words).map_err(|e| anyhow!("stdin: {e}"))?;
    let fingerprint = seed.identity().fingerprint();
    match Seed::load(path) {
        Ok(old) if old.as_bytes() == seed.as_bytes() => {
            eprintln!(
                "{} already holds this identity; nothing to do",
                path.display()
            );
            println!("{fingerprint}");
            return Ok(());
        }
        Ok(old) if !force => bail!(
            "{} holds a different identity ({}); restoring would replace it with {fingerprint} and lose it. \
             Back it up first (`wzp-client identity backup --identity {}`), then pass --force",
            path.display(),
            old.identity().fingerprint(),
            path.display()
        ),
        Err(IdentityError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            seed.save_new(path)
                .map_err(|e| anyhow!("identity: {e}"))?;
            eprintln!("restored identity into {}", path.display());
            println!("{fingerprint}");
            return Ok(());
        }
        Err(e) if !force => bail!("{e}; pass --force to replace the file"),
        _ => {}
    }
    replace(path, &seed)?;
    eprintln!(
        "replaced the identity in {} with the restored one",
        path.display()
    );
    println!("{fingerprint}");
    Ok(())
}

/// Writes `seed` to a new file beside `path` (mode 0600) and renames it over
/// `path`, so the old identity stays whole until the new one is on disk.
fn replace(path: &Path, seed: &Seed) -> Result<()> {
    let mut name = path
        .file_name()
        .ok_or_else(|| anyhow!("--identity {}: not a file name", path.display()))?
        .to_os_string();
    name.push(format!(".restore-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    seed.save_new(&tmp).map_err(|e| anyhow!("identity: {e}"))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("replacing {}", path.display())
    })
}
