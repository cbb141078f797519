//! `wzp-client reflect --relay ADDR`: our address as the relay sees it;
//! `wzp-client version-check ADDR`: the relay's version and build.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use wzp_proto::mapping::Mapping;
use wzp_proto::signal::SignalMessage;
use wzp_stages::net::quic;

use super::direct::RelayArgs;
use crate::signal::{connect, SignalConn, ANSWER};

pub const REFLECT_EXAMPLES: &str = "\
Examples:
  wzp-client reflect --relay 203.0.113.7:4433
      Print this machine's address as the relay sees it (after NAT).
  wzp-client reflect --relay 203.0.113.7:4433 --addresses
      Every address a direct call from this machine would offer the peer, one
      per line with what it is: as the relay sees it, on this machine's own
      network, global IPv6 (none listed: the relay saw this machine as it is).
  wzp-client reflect --relay 203.0.113.7:4433 --nat
      What the NAT in front of this machine did to the signalling socket's port
      (kept or moved), whether it keeps one mapping for every destination (the
      relay's mapping test), and so which half of a direct call's birthday
      search this machine takes when the plain path fails (docs/OPERATIONS.md).";

pub const VERSION_EXAMPLES: &str = "\
Examples:
  wzp-client version-check 203.0.113.7:4433
      Print `ADDR VERSION`: the relay's version and the git commit it was built from.";

#[derive(clap::Args)]
pub struct ReflectArgs {
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Also print this machine's own addresses that a direct call shares
    /// (`ADDR<TAB>what` per line; the first line is the relay's view).
    #[arg(long)]
    pub addresses: bool,
    /// Also say whether the NAT kept the signalling socket's port and
    /// whether it keeps one mapping for every destination (tested against
    /// the relay's mapping port), and so this machine's half of a direct
    /// call's birthday search (`ADDR<TAB>what`, after the addresses if both
    /// are asked).
    #[arg(long)]
    pub nat: bool,
}

#[derive(clap::Args)]
pub struct VersionArgs {
    /// Relay address, HOST:PORT.
    pub addr: String,
    /// Identity seed file (unused by the check itself; accepted like every
    /// command's).
    #[arg(long)]
    pub identity: Option<std::path::PathBuf>,
    /// The relay's TLS fingerprint to pin.
    #[arg(long)]
    pub relay_fingerprint: Option<String>,
    /// Known-relays file. Default ~/.wzp/known_relays.
    #[arg(long)]
    pub known_relays: Option<std::path::PathBuf>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")
}

pub fn reflect_cmd(args: ReflectArgs) -> Result<()> {
    let relay = args.relay.options()?;
    runtime()?.block_on(async move {
        let (mut sig, _) = SignalConn::open(&relay).await?;
        sig.send(&SignalMessage::Reflect).await?;
        let (addr, offer) = tokio::time::timeout(ANSWER, async {
            loop {
                match sig.recv().await? {
                    Some(SignalMessage::ReflectResponse {
                        observed_addr,
                        mapping_port,
                        mapping_token,
                    }) => return Ok((observed_addr, mapping_port.zip(mapping_token))),
                    Some(_) => continue,
                    None => return Err(sig.closed_why("reflecting")),
                }
            }
        })
        .await
        .map_err(|_| {
            anyhow!(
                "the relay did not answer reflect within {} s",
                ANSWER.as_secs()
            )
        })??;
        if args.addresses {
            println!("{addr}\tas the relay sees it");
            let relay_at = sig.conn.remote_address();
            let own = crate::nat::own_local_addrs(sig.endpoint(), relay_at, Some(addr));
            let relay_v4 = crate::nat::canonical(relay_at).is_ipv4();
            for a in own {
                let what = if a.is_ipv6() && relay_v4 {
                    "this machine's global IPv6 (no NAT)"
                } else {
                    "this machine's, on its own network"
                };
                println!("{a}\t{what}");
            }
        } else if !args.nat {
            println!("{addr}");
        }
        if args.nat {
            let local = sig.endpoint().local_addr().ok();
            let mapping = match offer {
                Some((port, token)) => sig.test_mapping(addr, port, token).await?,
                None => Mapping::Unknown,
            };
            let tested = offer.is_some();
            println!(
                "{addr}\t{}",
                nat_line(addr, local, sig.raw().is_some(), mapping, tested)
            );
        }
        sig.close().await;
        Ok(())
    })
}

/// What `reflect --nat` says of the relay's view `observed` of a socket
/// bound at `local`.
fn nat_line(
    observed: std::net::SocketAddr,
    local: Option<std::net::SocketAddr>,
    can_spray: bool,
    mapping: Mapping,
    offered: bool,
) -> String {
    use wzp_proto::direct_path::BirthdayHalf;
    let observed = crate::nat::canonical(observed);
    let Some(local) = local else {
        return "this socket's own port is unknown: no birthday search".into();
    };
    let port = local.port();
    if !observed.is_ipv4() {
        return format!("port {port} over IPv6: no NAT is expected there, and no birthday search");
    }
    let moved = observed.port() != port;
    let independent = mapping == Mapping::Independent;
    let test = match (mapping, offered) {
        (Mapping::Independent, _) => {
            "; the relay's mapping port saw the same address: one mapping for every destination"
        }
        (Mapping::Dependent, _) => {
            "; the relay's mapping port saw another address: a mapping for each destination"
        }
        (Mapping::Unknown, true) => {
            "; the mapping test got no answer (the relay's mapping port filtered on the way?)"
        }
        (Mapping::Unknown, false) => "; the relay has no mapping port (mapping not tested)",
    };
    let half = crate::nat::birthday_half_for(observed, local, can_spray, independent);
    if moved && independent {
        return match half {
            Some(_) => format!(
                "the NAT moved port {port} but keeps one mapping for every destination \
                 (endpoint-independent, as carrier-grade NATs should){test}; a direct call \
                 reaches peers at this address, and to a peer behind a NAT that maps every \
                 destination anew it sends the birthday probes from here"
            ),
            None => format!(
                "the NAT moved port {port} but keeps one mapping for every destination{test}; \
                 this socket cannot send the birthday probes"
            ),
        };
    }
    let line = match half {
        Some(BirthdayHalf::Search) => format!(
            "the NAT moved port {port} (most likely anew for every destination: symmetric); \
             a direct call to a peer whose port was kept runs the birthday search from here \
             when its plain path fails (with a peer whose NAT moved its port too, the media \
             stays on the relay)"
        ),
        Some(BirthdayHalf::Spray) => format!(
            "port {port} kept (a home router's NAT, or none); a direct call to a peer whose \
             NAT moved its port sends the birthday probes from here when its plain path fails"
        ),
        None => format!("port {port} kept, but this socket cannot send the birthday probes"),
    };
    format!("{line}{test}")
}

pub fn version_cmd(args: VersionArgs) -> Result<()> {
    let relay = RelayArgs {
        relay: vec![args.addr.clone()],
        identity: args.identity,
        relay_fingerprint: args.relay_fingerprint.into_iter().collect(),
        known_relays: args.known_relays,
    }
    .options()?;
    runtime()?.block_on(async move {
        let (_ep, _, conn, _) = connect(&relay, wzp_proto::sni::VERSION).await?;
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .map_err(|_| anyhow!("the relay at {} did not answer the version probe", args.addr))?;
        match quic::peer_close(&reason) {
            Some((_, version)) if !version.is_empty() => {
                println!("{} {version}", args.addr);
                Ok(())
            }
            _ => bail!(
                "the relay at {} does not answer the version probe ({reason}); it may be older than this client",
                args.addr
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{nat_line, Mapping};

    #[test]
    fn nat_line_says_which_half_the_port_gives() {
        let a = |s: &str| s.parse().unwrap();
        let cases = [
            (
                "10.0.1.2:51234",
                Some("[::]:40000"),
                true,
                "moved port 40000",
            ),
            (
                "10.0.1.2:40000",
                Some("[::]:40000"),
                true,
                "port 40000 kept",
            ),
            (
                "[::ffff:10.0.1.2]:40000",
                Some("[::]:40000"),
                true,
                "to a peer whose NAT moved its port sends the birthday probes",
            ),
            (
                "10.0.1.2:51234",
                Some("[::]:40000"),
                true,
                "whose NAT moved its port too, the media stays on the relay",
            ),
            (
                "10.0.1.2:40000",
                Some("0.0.0.0:40000"),
                false,
                "cannot send",
            ),
            ("[2001:db8::2]:40000", Some("[::]:40000"), true, "over IPv6"),
            ("10.0.1.2:40000", None, true, "unknown"),
        ];
        for (observed, local, can, want) in cases {
            let line = nat_line(a(observed), local.map(a), can, Mapping::Unknown, false);
            assert!(line.contains(want), "{observed}: {line}");
            if !["over IPv6", "unknown"].contains(&want) {
                assert!(line.contains("mapping not tested"), "{observed}: {line}");
            }
        }
        // With the relay's mapping test.
        let cases = [
            (
                "10.0.1.2:51234",
                true,
                Mapping::Independent,
                "moved port 40000 but keeps one mapping for every destination",
            ),
            (
                "10.0.1.2:51234",
                true,
                Mapping::Independent,
                "sends the birthday probes from here",
            ),
            (
                "10.0.1.2:51234",
                false,
                Mapping::Independent,
                "cannot send the birthday probes",
            ),
            (
                "10.0.1.2:51234",
                true,
                Mapping::Dependent,
                "runs the birthday search from here",
            ),
            (
                "10.0.1.2:51234",
                true,
                Mapping::Dependent,
                "a mapping for each destination",
            ),
            (
                "10.0.1.2:40000",
                true,
                Mapping::Independent,
                "port 40000 kept",
            ),
            ("10.0.1.2:51234", true, Mapping::Unknown, "got no answer"),
        ];
        for (observed, can, mapping, want) in cases {
            let line = nat_line(a(observed), Some(a("[::]:40000")), can, mapping, true);
            assert!(line.contains(want), "{observed} {mapping:?}: {line}");
        }
    }
}
