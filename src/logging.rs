//! Log setup: text or JSON lines on stderr, filtered by `log.level`, coloured only on a
//! terminal. Warnings that fire in bursts go through [`crate::log_throttle`].

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a second call (tests) leaves the first in place.
pub fn init(cfg: &LogConfig) {
    // The level was validated with the config; fall back to `info` rather than fail.
    let mut filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // rustls warns once per handshake about what clients send (an IP address as SNI, say):
    // any client could flood the log. Its errors stay, unless `log.level` names rustls.
    if !cfg.level.contains("rustls") {
        if let Ok(quiet) = "rustls=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes are for a person at a terminal; in a file or the journal they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        // A log reader that went away (a pipe closed) makes writes fail: reporting that on
        // the same stderr panics the task that logged (the stop task, say). Lines are lost
        // instead; the gateway goes on.
        .log_internal_errors(false)
        .with_target(false);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
