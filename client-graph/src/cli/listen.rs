//! `wzp-client listen --relay ADDR`: register, answer incoming calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::ValueEnum;
use wzp_proto::direct_call::{CallEvent, IncomingCall};
use wzp_proto::direct_path::Role;
use wzp_proto::handshake::EphemeralKey;
use wzp_proto::signal::{AcceptMode, SignalMessage};

use super::direct::{flush, run_media, MediaArgs, RelayArgs};
use crate::signal::{ConnectError, MappingTest, SignalConn};

pub const LISTEN_EXAMPLES: &str = "\
Examples:
  wzp-client listen --relay 203.0.113.7:4433
      Wait for calls and answer each (`--accept trusted`, the default: the
      caller learns your address and the media goes straight between you
      while that path works); microphone in, speaker out.
  wzp-client listen --relay 203.0.113.7:4433 --relay-only
      The same, with the media always through the relay and your address
      shared with no one.
  wzp-client listen --relay 127.0.0.1:4433 --accept generic --input talk.wav --output heard.wav --duration 10s --once
      Answer one call through the relay only (your address stays private),
      send a WAV, record the caller, end after 10 s and exit.
  wzp-client listen --relay 127.0.0.1:4433 --accept reject
      Decline every call.

Each offer is printed with the caller's fingerprint and alias; an answered
call prints `SAS: CODE` (the caller prints the same code). When the relay
goes away, listen registers again as soon as it is back.";

/// How to answer offers.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Accept {
    /// Accept, and let the caller learn our address (the media goes
    /// straight between the two while that path works).
    Trusted,
    /// Accept through the relay only: our address is never revealed.
    Generic,
    /// Decline.
    Reject,
}

#[derive(clap::Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub relay: RelayArgs,
    /// How to answer each incoming call.
    #[arg(long, value_enum, default_value = "trusted")]
    pub accept: Accept,
    #[command(flatten)]
    pub media: MediaArgs,
    /// Exit after the first call.
    #[arg(long)]
    pub once: bool,
}

pub fn listen_cmd(args: ListenArgs) -> Result<()> {
    let relay = args.relay.options()?;
    let identity = relay.identity()?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .context("installing SIGINT handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .context("installing SIGTERM handler")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    rt.block_on(async move {
        let mut registered_once = false;
        let mut backoff = Duration::from_millis(100);
        while !stop.load(Ordering::Relaxed) {
            let (mut sig, relay_fp) = match SignalConn::open(&relay).await {
                Ok(s) => s,
                Err(ConnectError::Unreachable { .. }) if registered_once => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            sig.set_mapping_test(if args.media.relay_only {
                MappingTest::Off
            } else {
                MappingTest::Wait
            });
            let reg = match sig
                .register(&identity, relay_fp, args.media.alias.clone())
                .await
            {
                Ok(r) => r,
                Err(e) if registered_once => {
                    tracing::debug!("registering again: {e}");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            backoff = Duration::from_millis(100);
            println!(
                "{} {} at {} ({} {}); observed address {}",
                if registered_once { "registered again as" } else { "registered as" },
                identity.fingerprint(),
                relay.relay,
                reg.relay_label.as_deref().unwrap_or("relay"),
                reg.version.as_deref().unwrap_or("of unknown version"),
                reg.observed_addr
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "unknown".into())
            );
            if reg.mapping != wzp_proto::mapping::Mapping::Unknown {
                println!(
                    "NAT mapping of this socket: {} (tested against the relay's mapping port)",
                    reg.mapping.label()
                );
            }
            registered_once = true;
            loop {
                let msg = tokio::select! {
                    m = sig.recv() => m,
                    _ = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(50)).await } } => {
                        sig.close().await;
                        return Ok(());
                    }
                };
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => {
                        println!("lost the relay at {}; registering again when it is back", relay.relay);
                        break;
                    }
                };
                if !matches!(msg, SignalMessage::DirectCallOffer { .. }) {
                    continue;
                }
                let mut call = match IncomingCall::from_offer(&msg) {
                    Ok(c) => c,
                    Err(e) => {
                        if let Some(refusal) = wzp_proto::direct_call::refusal(&msg, &e) {
                            sig.send(&refusal).await?;
                        }
                        println!("refused a malformed offer: {e}");
                        continue;
                    }
                };
                println!(
                    "incoming call from {}{}",
                    call.caller(),
                    call.caller_alias()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default()
                );
                let mode = match args.accept {
                    Accept::Reject => {
                        call.reject();
                        flush(&mut sig, &mut call).await?;
                        println!("rejected");
                        if args.once {
                            sig.close().await;
                            return Ok(());
                        }
                        continue;
                    }
                    Accept::Trusted => AcceptMode::AcceptTrusted,
                    Accept::Generic => AcceptMode::AcceptGeneric,
                };
                let eph = EphemeralKey::random().map_err(|e| anyhow!("no randomness: {e}"))?;
                // Trusting the caller shares this side's address, for a
                // direct path (not with --relay-only).
                let addr = if matches!(mode, AcceptMode::AcceptTrusted) && !args.media.relay_only {
                    reg.observed_addr
                } else {
                    None
                };
                if addr.is_some() {
                    call.share_local(&crate::nat::own_local_addrs(
                        sig.endpoint(),
                        sig.conn.remote_address(),
                        addr,
                    ));
                }
                call.accept(&identity, eph, mode, addr)
                    .map_err(|e| anyhow!("{e}"))?;
                flush(&mut sig, &mut call).await?;
                let ready = loop {
                    let Some(m) = sig.recv().await? else {
                        break None;
                    };
                    let ev = call.handle(&m);
                    flush(&mut sig, &mut call).await?;
                    match ev {
                        Some(CallEvent::Answered(r)) => break Some(r),
                        Some(CallEvent::HungUp { .. }) | Some(CallEvent::Failed { .. }) => {
                            println!("the call ended before it started");
                            break None;
                        }
                        _ => {}
                    }
                };
                if let Some(ready) = ready {
                    println!("answered {} (room {})", ready.peer, ready.room);
                    run_media(
                        &mut sig,
                        &mut call,
                        &ready,
                        &relay,
                        &args.media,
                        addr.map(|own| (Role::Acceptor, Some(own))),
                        stop.clone(),
                    )
                        .await?;
                }
                if args.once {
                    sig.close().await;
                    return Ok(());
                }
            }
        }
        Ok(())
    })
}
