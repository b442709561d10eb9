//! Reloading the config file without a restart (SIGHUP): what can change live is applied —
//! the sales (those not changed through the API since), the `[queue]` defaults, the rate
//! limits, the pages, `log.level`, and the TLS certificate and key read again — without
//! closing a listener or dropping a connection, a queued request or a ticket. A file that
//! does not validate is refused, the error naming the key, and the running config stays.
//! Keys that take a restart (listen addresses, threads, the store, …) are named in the log.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::config::{Config, ConfigError};
use crate::http::server::TlsAcceptor;
use crate::pages::Pages;
use crate::sale::book::SaleBook;
use crate::sale::context::SaleContext;

/// Reads the config again, as the command line first did (the file, then its overrides).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// The keys applied live; every other changed key waits for a restart (the TLS files are
/// read again from the paths the process started with: new paths take a restart).
const LIVE: [&str; 5] = ["sale", "queue", "limits", "pages", "log.level"];

/// Keys under a live section that still take a restart: the bounds of the ticket books
/// every sale shares, sized when the gateway starts.
const RESTART_ONLY: [&str; 2] = ["queue.ticket_ttl", "queue.max_tickets"];

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A page template cannot be read.
    #[error("{0}")]
    Pages(#[from] crate::pages::PagesError),
    /// The sales' definitions were not applied.
    #[error("{0}")]
    Sales(#[from] crate::sale::book::ReloadRefused),
}

/// What a reload changes: the book of sales, the sale context (rate limits), the pages,
/// the TLS acceptor.
pub type Parts = (
    Arc<SaleBook>,
    Arc<SaleContext>,
    Arc<ArcSwap<Pages>>,
    Option<Arc<TlsAcceptor>>,
);

/// What a reload applies its changes to.
pub struct Reloader {
    source: ConfigSource,
    /// The config as last applied (its sales are what a reload compares with).
    running: tokio::sync::Mutex<Config>,
    /// The config the process started with: a restart-only key is compared with it.
    started: Config,
    book: Arc<SaleBook>,
    ctx: Arc<SaleContext>,
    pages: Arc<ArcSwap<Pages>>,
    tls: Option<Arc<TlsAcceptor>>,
}

impl Reloader {
    /// A reloader re-reading `source`, over what the gateway built from `started`: its
    /// book of sales, context, pages and TLS acceptor.
    pub fn new(source: ConfigSource, started: Config, parts: Parts) -> Self {
        let (book, ctx, pages, tls) = parts;
        Self {
            source,
            running: tokio::sync::Mutex::new(started.clone()),
            started,
            book,
            ctx,
            pages,
            tls,
        }
    }

    /// Reads the config again and applies what can change live; counted in
    /// `flashgate_config_reloads_total` and logged either way.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let result = self.apply().await;
        let outcome = match &result {
            Ok(()) => "applied",
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration stays");
                "refused"
            }
        };
        self.ctx
            .metrics
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn apply(&self) -> Result<(), ReloadError> {
        let mut running = self.running.lock().await;
        let next = (self.source)()?;
        // What can fail is prepared before anything changes.
        let pages = match next.pages.dir.as_str() {
            "" => Pages::builtin(),
            dir => Pages::load(std::path::Path::new(dir))?,
        };
        let sales = self.book.reload(&next.sales, &next.queue).await?;
        self.pages.store(Arc::new(pages));
        let l = &next.limits;
        self.ctx.per_user.set(l.per_user_rate, l.per_user_burst);
        self.ctx.per_ip.set(l.per_ip_rate, l.per_ip_burst);
        self.ctx
            .ticket_polls
            .set(l.ticket_poll_rate, l.ticket_poll_burst);
        self.ctx
            .relays_per_ip
            .set(l.relay_per_ip_rate, l.relay_per_ip_burst);
        if let Err(e) = crate::logging::set_level(&next.log.level) {
            tracing::warn!(error = %e, "log.level not reloaded");
        }
        if let Some(tls) = &self.tls {
            if let Err(e) = tls.reload() {
                tracing::error!(error = %e, "TLS reload failed; the certificate in use stays");
            }
        }
        let restart = restart_keys(&self.started, &next);
        if !restart.is_empty() {
            tracing::warn!(keys = %restart.join(", "),
                "these keys changed and take effect only at the next restart");
        }
        tracing::info!(created = ?sales.created, changed = ?sales.changed, ended = ?sales.ended,
            skipped_changed_through_api = ?sales.skipped, "configuration reloaded");
        *running = next;
        Ok(())
    }
}

/// The dotted keys whose values differ between `a` and `b` and are not applied live.
pub fn restart_keys(a: &Config, b: &Config) -> Vec<String> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    flatten("", &serde_json::to_value(a).unwrap_or_default(), &mut x);
    flatten("", &serde_json::to_value(b).unwrap_or_default(), &mut y);
    let (x, y): (
        std::collections::BTreeMap<_, _>,
        std::collections::BTreeMap<_, _>,
    ) = (x.into_iter().collect(), y.into_iter().collect());
    let mut keys: Vec<String> = x
        .keys()
        .chain(y.keys())
        .filter(|k| x.get(*k) != y.get(*k))
        .filter(|k| {
            RESTART_ONLY.contains(&k.as_str())
                || !LIVE
                    .iter()
                    .any(|l| *k == l || k.starts_with(&format!("{l}.")))
        })
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Every leaf of `v` under its dotted key (an array is one leaf).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = match prefix {
                    "" => k.clone(),
                    p => format!("{p}.{k}"),
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let base = "[upstream]\nurl = \"http://127.0.0.1:9\"\n";
        Config::from_toml(&format!("{base}{text}"), "test", &[]).expect("valid")
    }

    #[test]
    fn the_ticket_books_bounds_take_a_restart_though_queue_is_live() {
        // Adversarial review: both were reported reloaded, and neither was applied.
        let a = config("[queue]\nticket_ttl = \"10m\"\nmax_tickets = 3\ndrain_rate = 5\n");
        let b = config("[queue]\nticket_ttl = \"1s\"\nmax_tickets = 9\ndrain_rate = 7\n");
        assert_eq!(
            restart_keys(&a, &b),
            ["queue.max_tickets", "queue.ticket_ttl"]
        );
    }

    #[test]
    fn only_keys_that_take_a_restart_are_named() {
        let a = config("[server]\nthreads = 1\n[limits]\nper_user_rate = 5\n");
        let b = config(
            "[server]\nthreads = 2\nlisten = \"127.0.0.1:9999\"\n[limits]\nper_user_rate = 9\n\
             [log]\nlevel = \"debug\"\n[[sale]]\nsku = \"a\"\nstock = 1\n",
        );
        assert_eq!(restart_keys(&a, &b), ["server.listen", "server.threads"]);
        assert!(restart_keys(&a, &a).is_empty());
    }
}
