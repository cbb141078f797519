//! `wzp-client contacts`: the people you call by name (`contacts.rs`).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Subcommand;
use wzp_proto::Fingerprint;

use crate::contacts::Contacts;

pub const EXAMPLES: &str = "\
Examples:
  wzp-client contacts add alice 3f2a:9c01:77de:0b4e:5a10:c3d2:e8f7:1a6b
      Add a contact (her `wzp-client identity` prints the fingerprint);
      then `wzp-client call alice --relay ...` calls her.
  wzp-client contacts verify alice
      After a call on which you both read the same SAS: mark her verified.
  wzp-client contacts list
      Name, fingerprint and whether it is verified, one contact a line.
  wzp-client contacts remove alice
  wzp-client contacts block 9c4e:0d11:5b2a:77f0:e3c8:1a90:4d6b:22e5 --note \"calls at night\"
      Decline that fingerprint's calls without ringing (`unblock` takes it
      back; a contact's name works too).

`wzp-client listen` shares your address (for a direct path) only with
callers who are contacts, and answers anyone else through the relay alone
(`--accept` changes that). The file is ~/.wzp/contacts.toml (mode 0600).";

#[derive(clap::Args)]
pub struct ContactsArgs {
    /// Contacts file. Default ~/.wzp/contacts.toml.
    #[arg(long, global = true)]
    pub contacts: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<ContactsCommand>,
}

#[derive(Subcommand)]
pub enum ContactsCommand {
    /// List your contacts (the default).
    List,
    /// Add a contact.
    Add {
        /// What you call them by.
        name: String,
        /// Their fingerprint (`wzp-client identity` prints one's own).
        fingerprint: String,
        /// You already compared the SAS with them on a call.
        #[arg(long)]
        verified: bool,
    },
    /// Remove a contact.
    Remove {
        /// The contact's name.
        name: String,
    },
    /// Mark a contact verified: you both read the same SAS on a call.
    Verify {
        /// The contact's name.
        name: String,
    },
    /// Take a contact's verified mark away.
    Unverify {
        /// The contact's name.
        name: String,
    },
    /// Decline someone's calls without ringing (`listen`).
    Block {
        /// A fingerprint, or a contact's name.
        who: String,
        /// Why, for yourself.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Take a block back.
    Unblock {
        /// A fingerprint, or a contact's name.
        who: String,
    },
}

/// The contacts file a command uses: `--contacts`, else the default.
pub fn contacts_path(given: Option<PathBuf>) -> Result<PathBuf> {
    crate::trust::or_home(given, "contacts.toml")
}

pub fn contacts_cmd(args: ContactsArgs) -> Result<()> {
    let path = contacts_path(args.contacts)?;
    let mut contacts = Contacts::load(&path)?;
    match args.command.unwrap_or(ContactsCommand::List) {
        ContactsCommand::List => {
            if contacts.list().is_empty() {
                println!(
                    "no contacts yet ({}); add one: wzp-client contacts add NAME FINGERPRINT",
                    path.display()
                );
            }
            for c in contacts.list() {
                println!(
                    "{}  {}  {}{}",
                    c.name,
                    c.fingerprint,
                    if c.verified {
                        "verified"
                    } else {
                        "not verified"
                    },
                    if contacts.is_blocked(&c.fingerprint).is_some() {
                        ", blocked"
                    } else {
                        ""
                    }
                );
            }
            for b in contacts.blocked() {
                println!(
                    "blocked  {}{}",
                    b.fingerprint,
                    if b.note.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", b.note)
                    }
                );
            }
        }
        ContactsCommand::Add {
            name,
            fingerprint,
            verified,
        } => {
            let fp: Fingerprint = fingerprint
                .parse()
                .map_err(|e| anyhow!("{fingerprint}: not a fingerprint: {e}"))?;
            contacts.add(&name, fp, verified)?;
            println!(
                "added {name} ({fp}{}) to {}",
                if verified { ", verified" } else { "" },
                path.display()
            );
        }
        ContactsCommand::Remove { name } => {
            let gone = contacts.remove(&name)?;
            println!("removed {} ({})", gone.name, gone.fingerprint);
        }
        ContactsCommand::Verify { name } => {
            let c = contacts.set_verified(&name, true)?;
            println!("{} ({}) is verified", c.name, c.fingerprint);
        }
        ContactsCommand::Unverify { name } => {
            let c = contacts.set_verified(&name, false)?;
            println!("{} ({}) is not verified", c.name, c.fingerprint);
        }
        ContactsCommand::Block { who, note } => {
            let (fp, contact) = contacts.resolve(&who)?;
            let name = contact.map(|c| c.name.clone());
            let new = contacts.block(fp, &note)?;
            println!(
                "{} {fp}: `listen` declines its calls without ringing",
                if new { "blocked" } else { "still blocked" }
            );
            if let Some(name) = name {
                println!("{name} stays a contact; `wzp-client contacts unblock {name}` takes the block back");
            }
        }
        ContactsCommand::Unblock { who } => {
            let (fp, _) = contacts.resolve(&who)?;
            if contacts.unblock(&fp)? {
                println!("unblocked {fp}");
            } else {
                anyhow::bail!("{fp} is not blocked in {}", path.display());
            }
        }
    }
    Ok(())
}
