//! `wzp-client stages [KIND]`: the registered stage kinds.

use anyhow::{anyhow, Result};

pub fn stages(kind: Option<&str>) -> Result<()> {
    let registry = wzp_stages::registry();
    let mut out = String::new();
    match kind {
        None => {
            for info in registry.infos() {
                let ins: Vec<String> = info
                    .inputs
                    .iter()
                    .map(|p| format!("{}:{}", p.name, p.ty))
                    .collect();
                let outs: Vec<String> = info
                    .outputs
                    .iter()
                    .map(|p| format!("{}:{}", p.name, p.ty))
                    .collect();
                out.push_str(&format!("{:<24} {}\n", info.kind, info.summary));
                out.push_str(&format!(
                    "{:<24} in [{}]  out [{}]\n",
                    "",
                    ins.join(", "),
                    outs.join(", ")
                ));
                if !info.params.is_empty() {
                    let ps: Vec<String> = info
                        .params
                        .iter()
                        .map(|p| match &p.default {
                            Some(d) => format!("{}={d}", p.name),
                            None => format!("{} (required)", p.name),
                        })
                        .collect();
                    out.push_str(&format!("{:<24} params: {}\n", "", ps.join(", ")));
                }
            }
            out.push_str(&format!(
                "\n{} kinds. `wzp-client stages KIND` describes one.\n",
                registry.len()
            ));
        }
        Some(k) => {
            let f = registry.get(k).ok_or_else(|| {
                let hint = wzp_engine::error::did_you_mean(k, registry.kinds())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                anyhow!("unknown stage kind `{k}`{hint}; `wzp-client stages` lists them")
            })?;
            let info = f.info();
            out.push_str(&format!("{}\n  {}\n\n", info.kind, info.summary));
            out.push_str(&format!(
                "  domain: {} (can run in: {})\n",
                info.default_domain.name(),
                info.domains
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            out.push_str("  inputs:\n");
            for p in &info.inputs {
                out.push_str(&format!("    {:<10} {:<10} {}\n", p.name, p.ty, p.doc));
            }
            out.push_str("  outputs:\n");
            for p in &info.outputs {
                out.push_str(&format!("    {:<10} {:<10} {}\n", p.name, p.ty, p.doc));
            }
            out.push_str("  params:\n");
            for p in &info.params {
                let d = p
                    .default
                    .as_ref()
                    .map(|d| format!("default {d}"))
                    .unwrap_or_else(|| "required".into());
                out.push_str(&format!(
                    "    {:<16} {:<10} {:<18} {}\n",
                    p.name,
                    p.ty.to_string(),
                    d,
                    p.doc
                ));
            }
        }
    }
    print!("{out}");
    Ok(())
}
