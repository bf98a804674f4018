//! Logging: human text or JSON lines on stderr, the level from `[log] level` unless
//! `RUST_LOG` is set.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber; later calls do nothing.
pub fn init(settings: &LogSettings, verbose: bool) {
    let default_level = if verbose {
        "debug"
    } else {
        settings.level.as_str()
    };
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // the HTTP stack logs full addresses and headers at debug and trace, and those carry
    // API keys and tokens: it stays silent at every level
    for target in ["reqwest", "hyper", "hyper_util", "h2", "rustls", "tower"] {
        if let Ok(directive) = format!("{target}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // a closed stderr (a log pipe gone) must not bring the service down
        .log_internal_errors(false);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.with_target(false).compact().try_init(),
    };
}

/// The process's peak resident memory so far in MB (`VmHWM`), where the system tells it.
pub fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
