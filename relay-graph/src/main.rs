//! `wzp-relay`: runs a relay. See `docs/OPERATIONS.md`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use wzp_relay::config::Config;
use wzp_relay::endpoint::{load_identity, version_string, Relay};
use wzp_relay::observe::heap::CountingAlloc;

/// Counts live heap bytes and allocations for `/metrics`
/// (`wzp_relay_heap_bytes`, `wzp_relay_heap_allocations`).
#[global_allocator]
static HEAP: CountingAlloc = CountingAlloc;

/// A wzp relay: rooms, signaling and the SFU media graph over QUIC.
#[derive(Parser, Debug)]
#[command(name = "wzp-relay", version = version_string_static(), after_help = EXAMPLES)]
struct Cli {
    /// Config file (TOML); written with commented defaults if missing.
    /// Read again on SIGHUP: [[peers]], [[trusted]], [[calls]],
    /// [[global_rooms]], room sizes, join limits, the ringing timeout, the
    /// debug tap and the event log (opened anew: log rotation) apply at
    /// once, with no restart.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Identity seed file; created (mode 0600) if missing.
    /// Default: the config's `identity`, else ~/.wzp/relay-identity.
    #[arg(short = 'i', long = "identity")]
    identity: Option<PathBuf>,
    /// QUIC listen address (UDP), e.g. 0.0.0.0:4433 or 127.0.0.1:0.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HTTP address for /metrics, /healthz, /rooms, /sessions, /stages, /presence,
    /// /calls, /peers, /route/FP, /config.
    #[arg(long = "metrics-addr")]
    metrics_addr: Option<SocketAddr>,
    /// Log every media header of one room (its room id, which wzp-client
    /// prints on joining, or a call-* name), or of all rooms with `*`.
    #[arg(long = "debug-tap", value_name = "ROOM|*")]
    debug_tap: Option<String>,
    /// Append join/leave/refused events as JSON lines to FILE.
    #[arg(long = "event-log", value_name = "FILE")]
    event_log: Option<PathBuf>,
    /// Label shown to clients and peers.
    #[arg(long)]
    label: Option<String>,
    /// UDP port answering clients' NAT mapping tests (default: any free
    /// port; fix it to open it in a firewall).
    #[arg(
        long = "mapping-port",
        value_name = "PORT",
        conflicts_with = "no_mapping_test"
    )]
    mapping_port: Option<u16>,
    /// Run no mapping port (clients then cannot tell a NAT that moved their
    /// port but keeps one mapping from one that maps every destination anew).
    #[arg(long = "no-mapping-test")]
    no_mapping_test: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Check a config file without running the relay: it parses and
    /// validates, and its relay graph (built-in or `graph =`) compiles.
    /// Exit 0 and a summary when it would start; exit 1 and why not.
    /// Never writes the file.
    #[command(after_help = CHECK_EXAMPLES)]
    Check {
        /// The config file to check.
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Print this relay's TLS fingerprint (what peers pin in `[[peers]]` and
    /// `[[trusted]]`) on its own line and exit; creates the identity if
    /// missing.
    #[command(after_help = FINGERPRINT_EXAMPLES)]
    Fingerprint {
        /// Identity seed file; created (mode 0600) if missing.
        /// Default: the config's `identity`, else ~/.wzp/relay-identity.
        #[arg(short = 'i', long = "identity")]
        identity: Option<PathBuf>,
        /// Config file whose `identity` to use (read, never written).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

const FINGERPRINT_EXAMPLES: &str = "\
Examples:
  wzp-relay fingerprint -i /etc/wzp/relay-b.seed
      Prints e.g. 9f:58:6d:75:...:73:ba (one line), for relay A's config:
        [[peers]]
        address = \"relay-b.example.org:4433\"
        fingerprint = \"$(wzp-relay fingerprint -i /etc/wzp/relay-b.seed)\"
        label = \"relay-b\"
  wzp-relay fingerprint -c /etc/wzp/relay.toml
      The fingerprint of the identity that config names.";

const CHECK_EXAMPLES: &str = "\
Examples:
  wzp-relay check -c /etc/wzp/relay.toml && systemctl reload wzp-relay
      Check an edited config, then reload it into the running relay.
  ansible.builtin.template: ... validate: wzp-relay check -c %s
      Refuse to install a config the relay would not start with.";

/// `wzp-relay check`: whether the relay would start with `path` (its
/// identity and sockets aside), without writing anything.
fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let text = wzp_engine::files::read_text(path, wzp_engine::files::MAX_TEXT)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let cfg = Config::parse(&text, path)?;
    // The relay graph compiles as at start (one runtime thread, nothing bound).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime to compile the relay graph")?;
    rt.block_on(async {
        let media = wzp_relay::media::Media::start(&cfg)?;
        media.stop();
        anyhow::Ok(())
    })
    .with_context(|| format!("{}: the relay would not start", path.display()))?;
    let graph = cfg.graph.as_ref().map_or_else(
        || "built-in graphs/relay.toml".to_string(),
        |g| g.display().to_string(),
    );
    println!(
        "{}: ok: {} peers, {} trusted relays, {} call rooms, {} global rooms; relay graph {graph} compiles",
        path.display(),
        cfg.peers.len(),
        cfg.trusted.len(),
        cfg.calls.len(),
        cfg.global_rooms.len(),
    );
    Ok(())
}

/// `wzp-relay fingerprint`: the fingerprint alone on stdout, anything else
/// on stderr, so scripts can capture it.
fn print_fingerprint(identity: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let from_config = match &config {
        Some(path) => {
            let text = wzp_engine::files::read_text(path, wzp_engine::files::MAX_TEXT)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            Config::parse(&text, path)?.identity
        }
        None => None,
    };
    let identity = identity.or(from_config).unwrap_or_else(default_identity);
    let existed = identity.exists();
    let cert = load_identity(&identity)?;
    if !existed {
        eprintln!(
            "created a new relay identity in {} (keep it: clients pin its fingerprint)",
            identity.display()
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", cert.tls_fingerprint())?;
    out.flush()?;
    Ok(())
}

const EXAMPLES: &str = "\
Examples:
  wzp-relay --listen 0.0.0.0:4433 --metrics-addr 127.0.0.1:9090
      Serve on UDP 4433 with /metrics, /healthz, /rooms, ... on 9090;
      prints the TLS fingerprint clients and peers pin.
  wzp-relay --listen 0.0.0.0:4433 --mapping-port 4443
      Clients' NAT mapping tests on UDP 4443 (open it with 4433 in a
      firewall; by default the relay takes any free port).
  wzp-relay -c /etc/wzp/relay.toml
      Run from a config file (written with commented defaults if missing).
  kill -HUP $(pidof wzp-relay)
      Re-read that file: peers, trusted relays, call rooms, global rooms,
      room sizes, join limits, the ringing timeout and the debug tap change
      at once, no call dropped, and the event log is opened anew (after a
      log rotation); other changes wait for a restart (the log says which).
  wzp-relay --listen 127.0.0.1:0 --event-log events.jsonl --debug-tap '*'
      A test relay on an ephemeral port, logging joins and every media header.
  wzp-relay fingerprint -i relay.seed
      Print only the TLS fingerprint (for another relay's [[peers]]) and exit.
  wzp-relay check -c /etc/wzp/relay.toml
      Check a config (and its relay graph) without running; exit 1 and why if
      the relay would not start with it.";

/// The version `--version` prints: the crate version and the git commit.
fn version_string_static() -> &'static str {
    Box::leak(version_string().into_boxed_str())
}

fn default_identity() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".wzp").join("relay-identity"),
        None => PathBuf::from("relay-identity"),
    }
}

/// A flag given before the subcommand, after it, or both the same way.
fn one_of(
    flag: &str,
    top: Option<PathBuf>,
    sub: Option<PathBuf>,
) -> anyhow::Result<Option<PathBuf>> {
    match (top, sub) {
        (Some(a), Some(b)) if a != b => Err(anyhow::anyhow!(
            "{flag} is given twice, as {} and {}; give it once",
            a.display(),
            b.display()
        )),
        (a, b) => Ok(b.or(a)),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Check { config }) = &cli.command {
        let config = one_of("--config", cli.config.clone(), config.clone())?;
        let Some(path) = config else {
            anyhow::bail!("wzp-relay check needs the file to check: wzp-relay check -c FILE");
        };
        return check_config(&path);
    }
    if let Some(Command::Fingerprint { identity, config }) = cli.command {
        // `wzp-relay -i FILE fingerprint` means the same as
        // `wzp-relay fingerprint -i FILE`: printing the default identity's
        // fingerprint instead would be a wrong answer that looks right.
        let identity = one_of("--identity", cli.identity, identity)?;
        let config = one_of("--config", cli.config, config)?;
        return print_fingerprint(identity, config);
    }
    let filter = match std::env::var("RUST_LOG") {
        // One that does not parse is refused, not replaced without a word.
        Ok(v) => tracing_subscriber::EnvFilter::try_new(&v).map_err(|e| {
            anyhow::anyhow!(
                "RUST_LOG {v:?} is not a log filter ({e}); use a level (`info`) or \
                 TARGET=LEVEL pairs (`wzp_relay=debug,info`)"
            )
        })?,
        // rustls warns once per bad ClientHello, echoing what the client
        // sent in full: a flood of them would flood the log. The relay logs
        // its own refusals, rate-limited and cut.
        Err(_) => tracing_subscriber::EnvFilter::new("info,rustls=error"),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();

    let mut cfg = match &cli.config {
        Some(path) => {
            let (cfg, created) = Config::load_or_create(path)?;
            if created {
                println!("wrote an example config to {}", path.display());
            }
            cfg
        }
        None => Config::default(),
    };
    let overrides = Overrides {
        listen: cli.listen,
        mapping_port: cli.mapping_port,
        no_mapping_test: cli.no_mapping_test,
        metrics_addr: cli.metrics_addr,
        debug_tap: cli.debug_tap,
        event_log: cli.event_log,
        label: cli.label,
    };
    overrides.apply(&mut cfg);
    let origin = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("command line"));
    cfg.validate(&origin)?;
    let identity = cli
        .identity
        .or_else(|| cfg.identity.clone())
        .unwrap_or_else(default_identity);
    let existed = identity.exists();
    let cert = load_identity(&identity)?;
    if !existed {
        println!(
            "created a new relay identity in {} (keep it: clients pin its fingerprint)",
            identity.display()
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(match cfg.io_threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        })
        .enable_all()
        .thread_name("wzp-relay-io")
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        let relay = Relay::start(cfg, &cert)?;
        let shared = relay.services.clone();
        let metrics = match shared.cfg.metrics_addr {
            Some(addr) => {
                let (local, _task) = wzp_relay::observe::http::serve(shared.clone(), addr)
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                local.to_string()
            }
            None => "off".to_string(),
        };
        // Watched from before the `listening` line: a SIGHUP that came
        // before the watch would end the process (its default action).
        let hangup = hangup_signal();
        let fp = shared.tls_fingerprint;
        let public = wzp_relay::dial::dialable(shared.cfg.public_addr.as_deref(), relay.local_addr);
        let mut out = std::io::stdout().lock();
        writeln!(out, "relay tls fingerprint: {fp}")?;
        writeln!(
            out,
            "# To peer with this relay, add to the other relay's config:"
        )?;
        writeln!(out, "{}", public.comment)?;
        writeln!(out, "[[peers]]")?;
        // TOML strings, quoted and escaped: the snippet is pasted as it is.
        let quoted = |v: &str| toml::Value::String(v.to_string()).to_string();
        writeln!(out, "address = {}", quoted(&public.address))?;
        writeln!(out, "fingerprint = \"{fp}\"")?;
        writeln!(out, "label = {}", quoted(&shared.cfg.label))?;
        writeln!(
            out,
            "listening quic={} metrics={metrics} mapping={} fingerprint={fp} label={}",
            relay.local_addr,
            relay
                .mapping_addr
                .map_or_else(|| "off".to_string(), |a| a.to_string()),
            shared.cfg.label
        )?;
        out.flush()?;
        drop(out);

        let reloads = tokio::spawn(reload_on_hangup(
            hangup,
            shared.clone(),
            cli.config.clone(),
            overrides,
        ));
        tokio::select! {
            _ = relay.serve() => {}
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
            }
        }
        reloads.abort();
        relay.shutdown().await;
        anyhow::Ok(())
    })
}

/// The command line's settings, laid over the config file's at start and
/// at every reload (so a reload never reads them as changed).
struct Overrides {
    listen: Option<SocketAddr>,
    mapping_port: Option<u16>,
    no_mapping_test: bool,
    metrics_addr: Option<SocketAddr>,
    debug_tap: Option<String>,
    event_log: Option<PathBuf>,
    label: Option<String>,
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) {
        if let Some(a) = self.listen {
            cfg.listen = a;
        }
        if let Some(p) = self.mapping_port {
            cfg.mapping_port = Some(p);
            cfg.mapping_test = true;
        }
        if self.no_mapping_test {
            cfg.mapping_test = false;
        }
        if let Some(a) = self.metrics_addr {
            cfg.metrics_addr = Some(a);
        }
        if let Some(t) = &self.debug_tap {
            cfg.debug_tap = Some(t.clone());
        }
        if let Some(p) = &self.event_log {
            cfg.event_log = Some(p.clone());
        }
        if let Some(l) = &self.label {
            cfg.label = l.clone();
        }
    }
}

/// The `SIGHUP` watch ([`hangup_signal`]).
#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

/// Starts watching for `SIGHUP` (`None`: it cannot be watched here).
fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot watch for SIGHUP ({e}); the config is read at start only");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// On every `SIGHUP`, reads the config file again and applies what can be
/// applied running (`wzp_relay::reload`): peers, trusted relays, call
/// rooms, global rooms, the settings of `reload::LIVE`, and the event log
/// opened anew. A file that does not read or validate changes
/// nothing and is logged as an error; the relay runs on.
async fn reload_on_hangup(
    hangup: Hangup,
    services: std::sync::Arc<wzp_relay::endpoint::Services>,
    path: Option<PathBuf>,
    overrides: Overrides,
) {
    #[cfg(unix)]
    {
        use std::sync::atomic::Ordering;
        let Some(mut hangup) = hangup else {
            return;
        };
        while hangup.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::warn!(
                    "SIGHUP: nothing to reload (started without --config); restart to change settings"
                );
                continue;
            };
            let read = wzp_engine::files::read_text(path, wzp_engine::files::MAX_TEXT)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|text| Config::parse(&text, path).map_err(|e| e.to_string()))
                .and_then(|mut cfg| {
                    overrides.apply(&mut cfg);
                    cfg.validate(path).map_err(|e| e.to_string())?;
                    Ok(cfg)
                });
            let cfg = match read {
                Ok(cfg) => cfg,
                Err(e) => {
                    services
                        .counters
                        .config_reload_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!("config reload refused, nothing changed: {e}");
                    continue;
                }
            };
            let Some(done) = wzp_relay::reload::reload(&services, &cfg).await else {
                return;
            };
            services
                .counters
                .config_reloads
                .fetch_add(1, Ordering::Relaxed);
            if done.event_log_error.is_some() {
                tracing::warn!(
                    "config reloaded from {}: {}",
                    path.display(),
                    done.summary()
                );
            } else {
                tracing::info!(
                    "config reloaded from {}: {}",
                    path.display(),
                    done.summary()
                );
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (hangup, services, path, overrides);
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
