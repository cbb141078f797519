//! The media path: forwarding shards, each running `graphs/relay.toml`
//! (QUIC ingress -> SFU fan-out -> QUIC egress) on a task of the I/O
//! runtime, and the debug tap.
//!
//! ```text
//!   datagrams ─► pump_datagrams_in ─► IngressFeed ─ring─► [relay.toml: ingress -> fanout -> egress] ─ring─► EgressPump::flush ─► send_datagram
//!                                            │ notify          ▲                                                  (same task)
//!                                            ▼                 │
//!                          forward() task per shard: one cycle, then flush
//!                            rooms (admit/leave) ── SfuCommand ring
//! ```
//!
//! Each shard's packet domain is hosted on a task of the I/O runtime
//! ([`Graph::take_runner`]): no thread hop between reading, forwarding and
//! sending (docs/DESIGN.md, "The relay's forwarding loop"). A room lives on
//! one shard, chosen once at admission ([`crate::rooms::RoomHandle`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use wzp_engine::compile::{compile_with, Existing, Wakers};
use wzp_engine::exec::DomainRunner;
use wzp_engine::prelude::*;
use wzp_engine::stage::Counter;
use wzp_engine::stats::GraphStats;
use wzp_proto::MediaHeader;
use wzp_stages::federation::{table_channel, FederationTable, TablePublisher};
use wzp_stages::net::quic::{self, EgressPeer, EgressPeers, IngressFeed};
use wzp_stages::sfu::{membership_channel, SfuCommand, SfuControl};

use crate::config::Config;

/// The built-in relay graph.
pub const RELAY_GRAPH: &str = include_str!("../../../graphs/relay.toml");

/// Datagrams the ring into the graph holds.
const INGRESS_RING: usize = 4096;
/// Packets the ring out of the graph holds (fan-out multiplies).
const EGRESS_RING: usize = 16384;
/// Membership commands in flight.
const SFU_RING: usize = 8192;
/// How often a shard's forwarding task cycles with nothing to wake it.
const IDLE_CYCLE: Duration = Duration::from_millis(20);

/// Why media packets were dropped inside the forwarding graph: the stage
/// counters behind `wzp_relay_drops_total`, resolved once when the graph is
/// built. A counter a custom relay graph lacks stays `None` (reads 0).
#[derive(Debug, Default, Clone)]
pub struct DropCounters {
    pub ingress_ring_full: Vec<Counter>,
    pub ingress_too_large: Vec<Counter>,
    pub malformed: Vec<Counter>,
    pub unknown_sender: Vec<Counter>,
    pub sender_spoofed: Vec<Counter>,
    pub sender_limit: Vec<Counter>,
    pub rate_limited: Vec<Counter>,
    pub stale_replay: Vec<Counter>,
    pub fanout_batch_full: Vec<Counter>,
    pub egress_ring_full: Vec<Counter>,
    pub egress_too_large: Vec<Counter>,
    pub send_error: Vec<Counter>,
    pub unknown_destination: Vec<Counter>,
}

impl DropCounters {
    fn resolve(stats: &GraphStats) -> DropCounters {
        let find = |kind: &str, name: &str| -> Vec<Counter> {
            stats
                .stages_of_kind(kind)
                .filter_map(|s| s.counter_handle(name))
                .collect()
        };
        DropCounters {
            ingress_ring_full: find("net.quic_ingress", "ring_full"),
            ingress_too_large: find("net.quic_ingress", "too_large"),
            malformed: find("sfu.fanout", "malformed"),
            unknown_sender: find("sfu.fanout", "unknown_peer"),
            sender_spoofed: find("sfu.fanout", "sender_spoofed"),
            sender_limit: find("sfu.fanout", "sender_limit"),
            rate_limited: find("sfu.fanout", "rate_limited"),
            stale_replay: find("sfu.fanout", "stale_replay"),
            fanout_batch_full: find("sfu.fanout", "out_full"),
            egress_ring_full: find("net.quic_egress", "ring_full"),
            egress_too_large: find("net.quic_egress", "too_large"),
            send_error: find("net.quic_egress", "send_errors"),
            unknown_destination: find("net.quic_egress", "unknown_peer"),
        }
    }

    /// `(reason label, total)` for every drop reason.
    pub fn totals(&self) -> [(&'static str, u64); 13] {
        let sum = |v: &Vec<Counter>| v.iter().map(Counter::get).sum::<u64>();
        [
            ("ingress_ring_full", sum(&self.ingress_ring_full)),
            ("ingress_too_large", sum(&self.ingress_too_large)),
            ("malformed", sum(&self.malformed)),
            ("unknown_sender", sum(&self.unknown_sender)),
            ("sender_spoofed", sum(&self.sender_spoofed)),
            ("sender_limit", sum(&self.sender_limit)),
            ("rate_limited", sum(&self.rate_limited)),
            ("stale_replay", sum(&self.stale_replay)),
            ("fanout_batch_full", sum(&self.fanout_batch_full)),
            ("egress_ring_full", sum(&self.egress_ring_full)),
            ("too_large", sum(&self.egress_too_large)),
            ("send_error", sum(&self.send_error)),
            ("unknown_destination", sum(&self.unknown_destination)),
        ]
    }
}

/// One forwarding shard: its own relay graph, rings and egress pump. No
/// state is shared between shards, so no lock is taken per packet and
/// rooms scale over cores.
pub struct Shard {
    sfu: Mutex<SfuControl>,
    /// Wakes the shard's forwarding task (new datagrams, membership changes).
    wake: Arc<tokio::sync::Notify>,
    feed: Arc<IngressFeed>,
    egress: Mutex<EgressPeers>,
    pub graph_stats: Arc<GraphStats>,
    pub drops: DropCounters,
    /// The federation stages' table feeds (`relay.fed_in`, `relay.fed_out`).
    federation: Mutex<Vec<TablePublisher>>,
}

/// A membership command was lost: the fan-out's ring was full.
#[derive(Debug)]
pub struct SfuRingFull;

impl Shard {
    /// Sends a membership command to the shard's fan-out and wakes it.
    pub fn membership(&self, cmd: SfuCommand) -> Result<(), SfuRingFull> {
        let r = self
            .sfu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(cmd)
            .map_err(|_| SfuRingFull);
        self.wake.notify_one();
        r
    }

    /// Moves the sender ids the shard's fan-out bound since the last call
    /// into `out`.
    pub fn take_bindings(&self, out: &mut Vec<wzp_stages::sfu::SfuBinding>) {
        self.sfu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_bindings(out);
    }

    /// Routes packets for `handle` to `peer`'s connection.
    pub fn add_egress(&self, handle: u32, peer: EgressPeer) {
        self.egress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(handle, peer);
    }

    /// Stops routing packets to `handle`, and wakes the forwarding task so
    /// the pump drops its hold on the connection now, with no media flowing.
    pub fn remove_egress(&self, handle: u32) {
        self.egress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(handle);
        self.wake.notify_one();
    }

    /// Where a session's datagrams go into the graph.
    pub fn feed(&self) -> &Arc<IngressFeed> {
        &self.feed
    }

    /// Hands the federation stages a new routing table (taken at their next
    /// cycle) and wakes the shard.
    pub fn publish_federation(&self, table: &Arc<FederationTable>) {
        for p in self
            .federation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            p.publish(table.clone());
        }
        self.wake.notify_one();
    }
}

/// Every forwarding shard and the graphs behind them.
pub struct Media {
    pub shards: Vec<Shard>,
    graphs: Mutex<Vec<Graph>>,
    stop: Arc<AtomicBool>,
    forwarders: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Media {
    /// Compiles the relay graph once per shard and starts each shard's
    /// forwarding task. Call inside a tokio runtime.
    pub fn start(cfg: &Config) -> anyhow::Result<Media> {
        let (graph_text, graph_file) = match &cfg.graph {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read graph {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (RELAY_GRAPH.to_string(), "graphs/relay.toml".to_string()),
        };
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("max_peers".to_string(), cfg.max_peers.to_string());
        vars.insert("max_rooms".to_string(), cfg.max_rooms.to_string());
        let spec = GraphSpec::parse(&graph_text, &graph_file, &vars)
            .map_err(|e| anyhow!("{e}"))
            .context("relay graph")?;

        let n_shards = shard_count(cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let mut shards = Vec::with_capacity(n_shards);
        let mut graphs = Vec::with_capacity(n_shards);
        let mut forwarders = Vec::with_capacity(n_shards);
        for i in 0..n_shards {
            let wakers = Wakers::default();
            let epoch = Instant::now();
            let (feed, ingress_port) =
                quic::ingress_channel(INGRESS_RING, wakers.packet.clone(), epoch);
            let wake = Arc::new(tokio::sync::Notify::new());
            feed.notify_on_push(wake.clone());
            let (egress_peers, pump, egress_port) = quic::egress_channel(EGRESS_RING);
            let (sfu, membership) = membership_channel(SFU_RING);
            let (fed_in, fed_in_port) = table_channel(Default::default());
            let (fed_out, fed_out_port) = table_channel(Default::default());
            let mut res = Resources::new();
            res.insert("relay.ingress", Arc::new(ingress_port));
            res.insert("relay.egress", Arc::new(egress_port));
            res.insert("relay.sfu", Arc::new(membership));
            res.insert("relay.fed_in", Arc::new(fed_in_port));
            res.insert("relay.fed_out", Arc::new(fed_out_port));
            let mut spec = spec.clone();
            if n_shards > 1 {
                spec.name = format!("{}-{i}", spec.name);
            }
            let compiled = compile_with(
                &spec,
                &wzp_stages::registry(),
                &res,
                &Existing::default(),
                wakers,
            )
            .map_err(|e| anyhow!("{e}"))
            .context("relay graph")?;
            let mut graph = Graph::new(compiled);
            let runner = graph.take_runner(Domain::Packet).ok_or_else(|| {
                anyhow!("relay graph: no packet-domain stages (ingress -> fanout -> egress)")
            })?;
            if let Some(d) = graph.domains_left().first() {
                return Err(anyhow!(
                    "relay graph: stages in the {d:?} domain; a relay graph runs in the packet domain only"
                ));
            }
            forwarders.push(tokio::spawn(forward(
                runner,
                pump,
                wake.clone(),
                stop.clone(),
                epoch,
                Duration::from_micros(cfg.egress_coalesce_us),
            )));
            let graph_stats = graph.stats();
            shards.push(Shard {
                sfu: Mutex::new(sfu),
                wake,
                feed,
                egress: Mutex::new(egress_peers),
                drops: DropCounters::resolve(&graph_stats),
                graph_stats,
                federation: Mutex::new(vec![fed_in, fed_out]),
            });
            graphs.push(graph);
        }
        Ok(Media {
            shards,
            graphs: Mutex::new(graphs),
            stop,
            forwarders: Mutex::new(forwarders),
        })
    }

    /// The first forwarding shard whose task has ended while the relay
    /// runs (it panicked or its graph stopped): its media no longer flows.
    pub fn stopped_shard(&self) -> Option<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.forwarders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .position(|h| h.is_finished())
    }

    /// A shard by index (from a [`crate::rooms::RoomHandle`]).
    pub fn shard(&self, index: usize) -> &Shard {
        &self.shards[index]
    }

    /// Hands every shard's federation stages a new routing table.
    pub fn publish_federation(&self, table: FederationTable) {
        let table = Arc::new(table);
        for s in &self.shards {
            s.publish_federation(&table);
        }
    }

    /// A federation stage counter summed over every shard (0 when a custom
    /// relay graph has no such stage).
    pub fn federation_counter(&self, kind: &str, name: &str) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| {
                s.graph_stats
                    .stages_of_kind(kind)
                    .filter_map(|st| st.counter_handle(name))
                    .map(|c| c.get())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Drop counts summed over every shard.
    pub fn drop_totals(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = Vec::new();
        for s in &self.shards {
            for (i, (label, v)) in s.drops.totals().into_iter().enumerate() {
                match out.get_mut(i) {
                    Some(slot) => slot.1 += v,
                    None => out.push((label, v)),
                }
            }
        }
        out
    }

    /// Stops the forwarding tasks and the graphs.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.shards {
            s.wake.notify_one();
        }
        for g in self
            .graphs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            g.stop();
        }
        for t in self
            .forwarders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// The number of forwarding shards a config asks for.
pub fn shard_count(cfg: &Config) -> usize {
    match cfg.shards {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
}

/// One shard's forwarding loop, run to completion on the I/O runtime: wait
/// for datagrams (or a membership change), run one cycle of the relay graph
/// (ingress -> fan-out -> egress), then hand everything the cycle queued to
/// quinn. The datagrams are read, forwarded and sent on the same worker
/// thread, so a packet costs no thread hop and no futex wake-up; the graph's
/// stages are the same real-time code as anywhere else (no allocation, no
/// lock in `process`), the I/O around them is the task's. See
/// docs/DESIGN.md, "The relay's forwarding loop".
async fn forward(
    mut runner: DomainRunner,
    mut pump: quic::EgressPump,
    wake: Arc<tokio::sync::Notify>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    coalesce: Duration,
) {
    let mut idle = tokio::time::interval(IDLE_CYCLE);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A busy receiver's datagrams may be held up to `coalesce` so they leave
    // in one QUIC packet (stages/src/net/coalesce.rs); wake for the release.
    pump.set_coalesce_window(coalesce);
    while !stop.load(Ordering::Relaxed) {
        let release = pump.next_release();
        tokio::select! {
            _ = wake.notified() => {}
            _ = idle.tick() => {}
            _ = async {
                if let Some(t) = release {
                    tokio::time::sleep_until(t.into()).await;
                }
            }, if release.is_some() => {}
        }
        let t = Instant::now();
        runner.run_cycle(t.duration_since(epoch).as_nanos() as u64, t, None);
        pump.flush();
    }
}

/// One debug tap line: every clear header field of a media packet.
pub fn tap(dir: &str, room: &str, peer: u32, bytes: &[u8], fanout: Option<usize>) {
    match MediaHeader::parse(bytes) {
        Ok((h, _)) => tracing::info!(
            target: "wzp_relay::tap",
            dir,
            room,
            peer,
            sender = h.sender_id,
            seq = h.seq,
            codec = ?h.codec,
            ts = h.timestamp,
            fec_block = h.fec_block,
            fec_symbol = h.fec_symbol,
            fec_ratio = h.fec_ratio,
            repair = h.is_repair(),
            epoch = h.key_epoch,
            len = bytes.len(),
            fanout,
            "media"
        ),
        Err(e) => tracing::info!(
            target: "wzp_relay::tap",
            dir,
            room,
            peer,
            len = bytes.len(),
            error = %e,
            "malformed"
        ),
    }
}
