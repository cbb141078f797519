//! What a running graph publishes: per-stage timing, counters and gauges,
//! per-domain cycles and xruns. Read on the control side without locks on
//! the real-time side.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::stage::{Counter, Domain, Gauge};
use crate::timing::{DomainTiming, HistogramSnapshot, StageTiming};

/// Live handles to a graph's figures.
#[derive(Debug)]
pub struct GraphStats {
    pub graph: String,
    pub quantum: Duration,
    pub rate: u32,
    pub domains: Vec<(Domain, Arc<DomainTiming>)>,
    pub stages: Vec<StageStats>,
}

/// Live handles to one stage's figures.
#[derive(Debug, Clone)]
pub struct StageStats {
    pub id: String,
    pub kind: String,
    pub domain: Domain,
    pub latency: Duration,
    pub bridge: bool,
    pub timing: Arc<StageTiming>,
    pub counters: Vec<(String, Counter)>,
    pub gauges: Vec<(String, Gauge)>,
}

impl StageStats {
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.get())
    }

    /// A live handle to counter `name`, for readers that resolve their
    /// figures once (at build) instead of looking them up by name each time.
    pub fn counter_handle(&self, name: &str) -> Option<Counter> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
    }

    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.gauges
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| g.get())
    }
}

impl GraphStats {
    pub fn stage(&self, id: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// Every stage of kind `kind` (bridges excluded).
    pub fn stages_of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a StageStats> {
        self.stages
            .iter()
            .filter(move |s| s.kind == kind && !s.bridge)
    }

    /// Copies every figure now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            stages: self
                .stages
                .iter()
                .map(|s| StageSnapshot {
                    id: s.id.clone(),
                    kind: s.kind.clone(),
                    domain: s.domain,
                    bridge: s.bridge,
                    wait: s.timing.wait.snapshot(),
                    busy: s.timing.busy.snapshot(),
                    counters: s
                        .counters
                        .iter()
                        .map(|(n, c)| (n.clone(), c.get()))
                        .collect(),
                    gauges: s.gauges.iter().map(|(n, g)| (n.clone(), g.get())).collect(),
                })
                .collect(),
            domains: self
                .domains
                .iter()
                .map(|(d, t)| DomainSnapshot {
                    domain: *d,
                    cycles: t.cycles.load(Ordering::Relaxed),
                    xruns: t.xruns.load(Ordering::Relaxed),
                    busy: t.cycle_busy.snapshot(),
                })
                .collect(),
        }
    }

    /// A report over the window between `earlier` (or the start) and `now`.
    pub fn report(&self, now: &Snapshot, earlier: Option<&Snapshot>) -> Report {
        let q = self.quantum.as_nanos() as f64;
        let stages = now
            .stages
            .iter()
            .map(|s| {
                let prev = earlier.and_then(|e| e.stages.iter().find(|p| p.id == s.id));
                let (busy, wait) = match prev {
                    Some(p) => (s.busy.since(&p.busy), s.wait.since(&p.wait)),
                    None => (s.busy.clone(), s.wait.clone()),
                };
                StageReport {
                    id: s.id.clone(),
                    kind: s.kind.clone(),
                    domain: s.domain.name(),
                    cycles: busy.count,
                    busy_p50_us: busy.quantile(0.5) as f64 / 1e3,
                    busy_p99_us: busy.quantile(0.99) as f64 / 1e3,
                    busy_max_us: busy.max as f64 / 1e3,
                    busy_mean_us: busy.mean() / 1e3,
                    wait_p99_us: wait.quantile(0.99) as f64 / 1e3,
                    busy_ratio: if q > 0.0 { busy.mean() / q } else { 0.0 },
                    counters: s.counters.clone(),
                    gauges: s.gauges.clone(),
                }
            })
            .collect();
        let domains = now
            .domains
            .iter()
            .map(|d| {
                let prev = earlier.and_then(|e| e.domains.iter().find(|p| p.domain == d.domain));
                let busy = prev
                    .map(|p| d.busy.since(&p.busy))
                    .unwrap_or_else(|| d.busy.clone());
                DomainReport {
                    domain: d.domain.name(),
                    cycles: d.cycles,
                    xruns: d.xruns,
                    cycle_busy_p99_us: busy.quantile(0.99) as f64 / 1e3,
                    busy_ratio: if q > 0.0 { busy.mean() / q } else { 0.0 },
                }
            })
            .collect();
        Report {
            graph: self.graph.clone(),
            quantum_ms: self.quantum.as_secs_f64() * 1e3,
            rate: self.rate,
            domains,
            stages,
        }
    }
}

/// Every figure at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub stages: Vec<StageSnapshot>,
    pub domains: Vec<DomainSnapshot>,
}

#[derive(Clone, Debug)]
pub struct StageSnapshot {
    pub id: String,
    pub kind: String,
    pub domain: Domain,
    pub bridge: bool,
    pub wait: HistogramSnapshot,
    pub busy: HistogramSnapshot,
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, i64>,
}

#[derive(Clone, Debug)]
pub struct DomainSnapshot {
    pub domain: Domain,
    pub cycles: u64,
    pub xruns: u64,
    pub busy: HistogramSnapshot,
}

/// Figures for people and JSON (`--stats-json`, `/stages`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub graph: String,
    pub quantum_ms: f64,
    pub rate: u32,
    pub domains: Vec<DomainReport>,
    pub stages: Vec<StageReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DomainReport {
    pub domain: &'static str,
    pub cycles: u64,
    pub xruns: u64,
    pub cycle_busy_p99_us: f64,
    /// Mean cycle busy time over the quantum.
    pub busy_ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub id: String,
    pub kind: String,
    pub domain: &'static str,
    pub cycles: u64,
    pub busy_p50_us: f64,
    pub busy_p99_us: f64,
    pub busy_max_us: f64,
    pub busy_mean_us: f64,
    pub wait_p99_us: f64,
    /// Mean busy time over the quantum.
    pub busy_ratio: f64,
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, i64>,
}

impl Report {
    /// A fixed-width table like `pw-top`: one row per stage (bridges
    /// included), then one per domain.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<22} {:<20} {:<7} {:>9} {:>9} {:>9} {:>7} {:>6}\n",
            "STAGE", "KIND", "DOMAIN", "BUSY p50", "BUSY p99", "WAIT p99", "B/Q", "XRUNS"
        );
        let xr = |d: &str| {
            self.domains
                .iter()
                .find(|x| x.domain == d)
                .map(|x| x.xruns)
                .unwrap_or(0)
        };
        for st in &self.stages {
            let id = if st.id.len() > 22 {
                format!("{}…", &st.id[..21])
            } else {
                st.id.clone()
            };
            s.push_str(&format!(
                "{:<22} {:<20} {:<7} {:>7.1}us {:>7.1}us {:>7.1}us {:>6.2}% {:>6}\n",
                id,
                st.kind,
                st.domain,
                st.busy_p50_us,
                st.busy_p99_us,
                st.wait_p99_us,
                st.busy_ratio * 100.0,
                xr(st.domain),
            ));
        }
        for d in &self.domains {
            s.push_str(&format!(
                "{:<22} {:<20} {:<7} {:>9} {:>7.1}us {:>9} {:>6.2}% {:>6}\n",
                format!("[{} domain]", d.domain),
                format!("{} cycles", d.cycles),
                d.domain,
                "",
                d.cycle_busy_p99_us,
                "",
                d.busy_ratio * 100.0,
                d.xruns
            ));
        }
        let counters: Vec<String> = self
            .stages
            .iter()
            .filter(|s| !s.counters.is_empty() || !s.gauges.is_empty())
            .map(|s| {
                let mut parts: Vec<String> =
                    s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                parts.extend(s.gauges.iter().map(|(k, v)| format!("{k}={v}")));
                format!("  {}: {}", s.id, parts.join(" "))
            })
            .collect();
        if !counters.is_empty() {
            s.push_str("counters:\n");
            s.push_str(&counters.join("\n"));
            s.push('\n');
        }
        s
    }
}
