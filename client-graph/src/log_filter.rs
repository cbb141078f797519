//! The log filter of `wzp-client` and `wzp-netem`: `--log` when given, else
//! `RUST_LOG` when set and not empty, else `warn`. One that does not parse
//! is refused with a message saying which and why, not replaced by `warn`
//! without a word.

use tracing_subscriber::EnvFilter;

/// The filter from the `--log` value `flag` (an explicit flag wins), else
/// `RUST_LOG`, else `warn`. An empty `RUST_LOG` counts as unset: it would
/// switch every warning off, write failures included.
pub fn log_filter(flag: Option<&str>) -> Result<EnvFilter, String> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (source, text) = match (flag, env) {
        (Some(f), _) => ("--log", f.to_string()),
        (None, Some(v)) => ("RUST_LOG", v),
        (None, None) => ("--log", "warn".to_string()),
    };
    EnvFilter::try_new(&text).map_err(|e| {
        format!(
            "{source} {text:?} is not a log filter ({e}); use a level (`info`) or \
             TARGET=LEVEL pairs (`wzp_engine=debug,info`)"
        )
    })
}
