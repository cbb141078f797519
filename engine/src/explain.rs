//! `graph explain`: what a compiled graph will do, before it runs.

use std::fmt::Write;

use crate::compile::CompiledGraph;
use crate::params::format_duration;

/// A readable account of a compiled graph: clock, stages with their ports and
/// declared latency, links, domains with their schedules, inserted bridges,
/// and the latency budget along every source-to-sink path.
pub fn explain(g: &CompiledGraph) -> String {
    let mut s = String::new();
    let ms = |d: std::time::Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let _ = writeln!(s, "graph `{}` ({})", g.name, g.file);
    let _ = writeln!(
        s,
        "  clock: {} driver, {} quantum, {} Hz, {} items per batch",
        g.clock.driver.name(),
        format_duration(g.clock.quantum),
        g.clock.rate,
        g.batch_capacity
    );
    let _ = writeln!(s, "\nstages:");
    for st in g.stages.iter().filter(|st| !st.bridge) {
        let _ = writeln!(
            s,
            "  {:<16} {:<24} {:<8} latency {}",
            st.id,
            st.kind,
            st.domain.name(),
            ms(st.latency)
        );
        for p in &st.inputs {
            let _ = writeln!(
                s,
                "      in  {:<12} {}{}{}",
                p.name,
                p.ty,
                if p.required { "" } else { " (optional)" },
                if p.side {
                    " (side: no latency path)"
                } else {
                    ""
                }
            );
        }
        for p in &st.outputs {
            let _ = writeln!(s, "      out {:<12} {}", p.name, p.ty);
        }
    }
    let _ = writeln!(s, "\nlinks:");
    for l in &g.links {
        let (a, b) = (&g.stages[l.from.0], &g.stages[l.to.0]);
        if a.bridge || b.bridge {
            continue;
        }
        let _ = writeln!(
            s,
            "  {}.{} -> {}.{}  [{}]",
            a.id, a.outputs[l.from.1].name, b.id, b.inputs[l.to.1].name, l.ty
        );
    }
    for d in &g.delays {
        let _ = writeln!(s, "  {} -> {}  [{}, delay 1 quantum]", d.from, d.to, d.ty);
    }
    let _ = writeln!(s, "\ndomains:");
    for d in &g.domains {
        let order: Vec<&str> = d
            .steps
            .iter()
            .map(|st| g.stages[st.stage].id.as_str())
            .collect();
        let _ = writeln!(
            s,
            "  {:<8} {} steps, {} buffers: {}",
            d.domain.name(),
            d.steps.len(),
            d.buffers.len(),
            order.join(" -> ")
        );
    }
    if g.bridges.is_empty() {
        let _ = writeln!(s, "\nbridges: none (one domain)");
    } else {
        let _ = writeln!(s, "\nbridges (SPSC rings inserted by the compiler):");
        for b in &g.bridges {
            let _ = writeln!(
                s,
                "  {} ({}) -> {} ({})  [{}, {} items]",
                b.from,
                b.from_domain.name(),
                b.to,
                b.to_domain.name(),
                b.ty,
                b.capacity
            );
        }
    }
    let _ = writeln!(s, "\nlatency budget (declared, per path):");
    let mut paths: Vec<_> = g.paths.iter().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.total));
    for p in paths {
        let parts: Vec<String> = p
            .stages
            .iter()
            .map(|id| {
                let lat = g
                    .stages
                    .iter()
                    .find(|st| &st.id == id)
                    .map(|st| st.latency)
                    .unwrap_or_default();
                if lat.is_zero() {
                    id.clone()
                } else {
                    format!("{id} ({})", ms(lat))
                }
            })
            .collect();
        let _ = writeln!(s, "  {:>9}  {}", ms(p.total), parts.join(" -> "));
    }
    if let Some(max) = g.paths.iter().map(|p| p.total).max() {
        let _ = writeln!(
            s,
            "\nlongest path: {} (+ up to one quantum of scheduling, {})",
            ms(max),
            ms(g.clock.quantum)
        );
    }
    s
}
