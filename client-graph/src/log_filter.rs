//! The log filter of `wzp-client` and `wzp-netem`: `RUST_LOG` when set, else
//! `--log`. One that does not parse is refused with a message saying which
//! and why, not replaced by `warn` without a word.

use tracing_subscriber::EnvFilter;

/// The filter from `RUST_LOG` (when set) or the `--log` value `flag`.
pub fn log_filter(flag: &str) -> Result<EnvFilter, String> {
    let (source, text) = match std::env::var("RUST_LOG") {
        Ok(v) => ("RUST_LOG", v),
        Err(_) => ("--log", flag.to_string()),
    };
    EnvFilter::try_new(&text).map_err(|e| {
        format!(
            "{source} {text:?} is not a log filter ({e}); use a level (`info`) or \
             TARGET=LEVEL pairs (`wzp_engine=debug,info`)"
        )
    })
}
