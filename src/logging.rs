//! Log setup: text or JSON lines on stderr, filtered by `log.level`, coloured only on a
//! terminal. Warnings that fire in bursts go through [`crate::log_throttle`].

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Replaces the installed subscriber's filter (set once, by [`init`]).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static SET_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();

/// Filters by `level` from now on (a reload of `log.level`); an error when no subscriber
/// of ours is installed.
pub fn set_level(level: &str) -> Result<(), String> {
    match SET_FILTER.get() {
        Some(set) => set(filter(level)),
        None => Err("no log subscriber of flashgate's is installed".into()),
    }
}

/// The filter as `log.level` says (validated with the config; `info` rather than fail).
fn filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // rustls warns once per handshake about what clients send (an IP address as SNI, say):
    // any client could flood the log. Its errors stay, unless `log.level` names rustls.
    if !level.contains("rustls") {
        if let Ok(quiet) = "rustls=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    filter
}

/// Installs the global subscriber; a second call (tests) leaves the first in place.
pub fn init(cfg: &LogConfig) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&cfg.level))
        .with_writer(std::io::stderr)
        // Escape codes are for a person at a terminal; in a file or the journal they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        // A log reader that went away (a pipe closed) makes writes fail: reporting that on
        // the same stderr panics the task that logged (the stop task, say). Lines are lost
        // instead; the gateway goes on.
        .log_internal_errors(false)
        .with_target(false);
    let (installed, set): (bool, SetFilter) = match cfg.format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let set = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
            (builder.try_init().is_ok(), set)
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            let set = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
            (builder.try_init().is_ok(), set)
        }
    };
    if installed {
        let _ = SET_FILTER.set(set);
    }
}
