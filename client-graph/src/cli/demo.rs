//! `wzp-client demo`: a relay and two clients on this machine, one playing
//! the built-in sample to the other.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::parse_duration_arg;
use crate::call::{self, CallOptions};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the receiving client writes what it heard.
    #[arg(long, default_value = "out/demo-received.wav")]
    pub output: PathBuf,
    /// How long the call lasts.
    #[arg(long, default_value = "6s", value_parser = parse_duration_arg)]
    pub duration: Duration,
}

pub fn demo(args: DemoArgs) -> Result<()> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    // The recording's path is checked before anything starts (it failed
    // only once alice had talked for the whole call).
    super::check_writable("--output", &args.output)?;
    let dir = std::env::temp_dir().join(format!("wzp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The demo's identities go with it, whichever way it ends.
    let _cleanup = RemoveOnDrop(dir.clone());
    let dir = dir.as_path();
    let cert = wzp_relay::endpoint::load_identity(&dir.join("relay.seed"))?;
    let relay_stop = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let relay_thread = {
        let cert = cert.clone();
        let relay_stop = relay_stop.clone();
        std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let cfg = wzp_relay::config::Config {
                    listen: "127.0.0.1:0".parse().expect("literal address"),
                    label: "demo-relay".into(),
                    ..Default::default()
                };
                let relay = match wzp_relay::endpoint::Relay::start(cfg, &cert) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = addr_tx.send(Ok(relay.local_addr));
                tokio::select! {
                    _ = relay.serve() => {}
                    _ = async { while !relay_stop.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } } => {}
                }
                relay.shutdown().await;
            });
            Ok(())
        })
    };
    let relay_addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the demo relay did not start"))?
        .map_err(|e| anyhow!("the demo relay did not start: {e}"))?;
    println!(
        "demo: relay on {relay_addr}, fingerprint {}",
        cert.tls_fingerprint()
    );
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let secret = "demo room secret, shared by both".to_string();
    let client = |name: &str, input: &str, output: String| CallOptions {
        relay: relay_addr.to_string(),
        room: "demo".into(),
        room_secret: Some(secret.clone()),
        input: input.into(),
        output,
        duration: Some(args.duration),
        alias: Some(name.into()),
        identity: dir.join(format!("{name}.seed")),
        relay_fingerprint: Some(cert.tls_fingerprint()),
        more_relays: Vec::new(),
        known_relays: dir.join("known_relays"),
        graph: None,
        sets: BTreeMap::new(),
        realtime: false,
        stop: stop.clone(),
        label: format!("[{name}] "),
        direct: None,
        stats_json: None,
        record: None,
        top: false,
        controls: None,
        joined: None,
    };
    let alice = client("alice", "builtin", "null".into());
    let bob = client("bob", "tone:220", args.output.display().to_string());
    // One side failing ends the other's call too.
    let side = |opts: CallOptions| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let r = call::run_call(opts);
            if r.is_err() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            r
        })
    };
    let a = side(alice);
    let b = side(bob);
    let ra = a.join().map_err(|_| anyhow!("alice's client panicked"))??;
    let rb = b.join().map_err(|_| anyhow!("bob's client panicked"))??;
    relay_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = relay_thread.join();
    println!("\n[alice] sends the built-in sample ({} join)", ra.joins);
    print!("{}", ra.report.table());
    println!(
        "\n[bob] receives it and writes {} ({} join)",
        args.output.display(),
        rb.joins
    );
    print!("{}", rb.report.table());
    let c = |id: &str, k: &str| {
        rb.report
            .stages
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.counters.get(k))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "\nloss recovery at bob: frames_decoded={} dred_reconstructions={} fec_recovered={} classical_plc_invocations={}",
        c("dec0", "frames_decoded"),
        c("dec0", "dred_reconstructions"),
        c("dec0", "fec_recovered"),
        c("dec0", "classical_plc_invocations")
    );
    println!("wrote {}", args.output.display());
    Ok(())
}

/// Removes a folder when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
