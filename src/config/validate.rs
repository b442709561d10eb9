//! Checks that go beyond types: ranges, URLs, time windows, uniqueness.

use std::collections::HashSet;
use std::time::Duration;

use super::{Config, ConfigError, Overflow, SaleConfig};

/// Turns a deserialisation error into one that names the dotted key at fault.
pub(super) fn from_serde_error(e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    // Written the way `--set` takes keys: `sale.0.stock`, not `sale[0].stock`.
    let parts: Vec<String> = e
        .path()
        .iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    let path = if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join(".")
    };
    let message = e.inner().message().trim_end().to_owned();
    // For a missing field serde reports the containing table's path (for an unknown one,
    // the field's own); the field itself is in the message between backticks.
    let field = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let key = match field {
        Some(f) if path == "." => f.to_owned(),
        Some(f) if !path.ends_with(&format!(".{f}")) && path != f => format!("{path}.{f}"),
        _ => path,
    };
    ConfigError::invalid(key, message)
}

/// Validates value ranges and cross-key rules.
pub(super) fn check(c: &Config) -> Result<(), ConfigError> {
    check_server(c)?;
    check_upstream(c)?;
    check_queue(c)?;
    check_sales(c)?;
    check_identity(c)?;
    check_limits(c)?;
    check_store(c)?;
    check_delivery(c)?;
    check_cluster(c)?;
    check_log(c)
}

fn positive(key: &str, ok: bool) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, "must be greater than zero"))
    }
}

fn check_server(c: &Config) -> Result<(), ConfigError> {
    let s = &c.server;
    positive("server.max_connections", s.max_connections > 0)?;
    positive("admin.max_connections", c.admin.max_connections > 0)?;
    positive("server.backlog", s.backlog != Some(0))?;
    positive("server.header_timeout", !s.header_timeout.is_zero())?;
    positive("server.keepalive_timeout", !s.keepalive_timeout.is_zero())?;
    positive("server.body_timeout", !s.body_timeout.is_zero())?;
    positive("server.body_limit", s.body_limit > 0)?;
    positive("server.shutdown_timeout", !s.shutdown_timeout.is_zero())?;
    if s.threads > 1024 {
        return Err(ConfigError::invalid("server.threads", "at most 1024"));
    }
    positive("server.h2_max_streams", s.h2_max_streams > 0)?;
    positive(
        "server.h2_max_cancelled_streams",
        s.h2_max_cancelled_streams > 0,
    )?;
    if !(8192..=16 * 1024 * 1024).contains(&s.max_header_size) {
        return Err(ConfigError::invalid(
            "server.max_header_size",
            "must be between 8192 and 16777216 bytes",
        ));
    }
    crate::trusted_proxies::TrustedProxies::parse(&s.trusted_proxies)
        .map_err(|e| ConfigError::invalid("server.trusted_proxies", e))?;
    if let Some(tls) = &s.tls {
        for (key, file) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
            if file.is_empty() {
                return Err(ConfigError::invalid(key, "must name a PEM file"));
            }
        }
    }
    if s.listen == s.admin_listen && s.listen.port() != 0 {
        return Err(ConfigError::invalid(
            "server.admin_listen",
            "must differ from server.listen",
        ));
    }
    Ok(())
}

fn check_upstream(c: &Config) -> Result<(), ConfigError> {
    let u = &c.upstream;
    if u.max_connections == 0 || u.max_connections < u.pool_size {
        return Err(ConfigError::invalid(
            "upstream.max_connections",
            "must be at least 1 and at least upstream.pool_size",
        ));
    }
    let uri: http::Uri = u.url.parse().map_err(|e| {
        ConfigError::invalid("upstream.url", format!("`{}` is not a URL ({e})", u.url))
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(ConfigError::invalid(
                "upstream.url",
                format!("scheme `{other}` is not supported; use http://"),
            ))
        }
        None => {
            return Err(ConfigError::invalid(
                "upstream.url",
                format!("`{}` has no scheme; write http://host:port", u.url),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid("upstream.url", "has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // They would be read as part of the address, and shown in /readyz and the logs.
        return Err(ConfigError::invalid(
            "upstream.url",
            "must not carry credentials (user:password@)",
        ));
    }
    if uri.query().is_some() {
        return Err(ConfigError::invalid(
            "upstream.url",
            "must not have a query",
        ));
    }
    positive("upstream.timeout", !u.timeout.is_zero())?;
    positive("upstream.connect_timeout", !u.connect_timeout.is_zero())
}

/// The largest queue capacity: the queue's ring is allocated up front, for four times the
/// capacity (an operator may raise it that far while the sale runs): ~770 MB at this bound.
pub const MAX_CAPACITY: usize = 1_000_000;

/// The most order workers of one sale (each a store step in flight).
pub const MAX_WORKERS: usize = 1_024;

/// The most deliveries in flight (each a connection to the backend).
pub const MAX_IN_FLIGHT: usize = 4_096;

/// A queue's capacity and workers within their bounds, the error naming `key`'s prefix.
fn check_queue_size(
    prefix: &str,
    capacity: Option<usize>,
    workers: Option<usize>,
) -> Result<(), ConfigError> {
    if let Some(cap) = capacity {
        between(&format!("{prefix}capacity"), cap, 1, MAX_CAPACITY)?;
    }
    if let Some(w) = workers {
        between(&format!("{prefix}workers"), w, 1, MAX_WORKERS)?;
    }
    Ok(())
}

/// `n` within `lo..=hi`, else an error naming `key`.
fn between(key: &str, n: usize, lo: usize, hi: usize) -> Result<(), ConfigError> {
    match (lo..=hi).contains(&n) {
        true => Ok(()),
        false => Err(ConfigError::invalid(
            key,
            format!("must be between {lo} and {hi}"),
        )),
    }
}

fn check_queue(c: &Config) -> Result<(), ConfigError> {
    let q = &c.queue;
    check_queue_size("queue.", Some(q.capacity), Some(q.workers))?;
    positive("queue.drain_rate", q.drain_rate.or(1) > 0)?;
    positive("queue.drain_min", q.drain_min > 0)?;
    if q.drain_max < q.drain_min {
        let why = "must be at least queue.drain_min";
        return Err(ConfigError::invalid("queue.drain_max", why));
    }
    positive("queue.max_wait", !q.max_wait.is_zero())?;
    if !(q.admit_factor.is_finite() && q.admit_factor >= 1.0) {
        return Err(ConfigError::invalid(
            "queue.admit_factor",
            "must be a number of at least 1.0",
        ));
    }
    if q.overflow == Overflow::Redirect && !q.redirect_url.is_empty() {
        q.redirect_url.parse::<http::Uri>().map_err(|e| {
            ConfigError::invalid("queue.redirect_url", format!("not a URL or path ({e})"))
        })?;
    }
    Ok(())
}

fn check_sales(c: &Config) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, sale) in c.sales.iter().enumerate() {
        check_sale(sale, &format!("sale.{i}."))?;
        if !seen.insert(sale.sku.as_str()) {
            return Err(ConfigError::invalid(
                format!("sale.{i}.sku"),
                format!("`{}` is used by another sale", sale.sku),
            ));
        }
    }
    Ok(())
}

/// Checks one sale's definition, as a `[[sale]]` of the file or a body of the admin API;
/// the error names the key after `prefix` (`sale.0.` in the file, nothing in the API).
pub fn check_sale(sale: &SaleConfig, prefix: &str) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{prefix}{k}");
    if let Err(e) = crate::types::Sku::parse(&sale.sku) {
        return Err(ConfigError::invalid(
            key("sku"),
            format!("`{}` {e}", sale.sku),
        ));
    }
    positive(&key("per_user_limit"), sale.per_user_limit > 0)?;
    if sale.stock > crate::types::MAX_STOCK {
        return Err(ConfigError::invalid(
            key("stock"),
            "must be at most 9007199254740991 (2^53 - 1)",
        ));
    }
    if let (Some(start), Some(end)) = (sale.starts_at, sale.ends_at) {
        if end <= start {
            return Err(ConfigError::invalid(
                key("ends_at"),
                format!("{end} is not after starts_at {start}"),
            ));
        }
    }
    if let Some(window) = sale.prequeue {
        check_prequeue(&key("prequeue"), window, sale.starts_at.is_some())?;
    }
    check_queue_size(&key("queue."), sale.queue.capacity, sale.queue.workers)?;
    if let Some(rate) = sale.queue.drain_rate {
        positive(&key("queue.drain_rate"), rate.or(1) > 0)?;
    }
    Ok(())
}

/// The longest pre-queue window: a day.
const MAX_PREQUEUE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A pre-queue window needs an opening to be shuffled at, and a sane length.
fn check_prequeue(
    key: &str,
    window: std::time::Duration,
    has_start: bool,
) -> Result<(), ConfigError> {
    if !has_start {
        return Err(ConfigError::invalid(
            key,
            "needs the sale's starts_at: the pre-queue is shuffled at the opening",
        ));
    }
    if window.is_zero() || window > MAX_PREQUEUE {
        return Err(ConfigError::invalid(key, "must be between 1s and 24h"));
    }
    Ok(())
}

fn check_identity(c: &Config) -> Result<(), ConfigError> {
    if http::HeaderName::from_bytes(c.identity.header.as_bytes()).is_err() {
        return Err(ConfigError::invalid(
            "identity.header",
            format!("`{}` is not a header name", c.identity.header),
        ));
    }
    Ok(())
}

fn check_limits(c: &Config) -> Result<(), ConfigError> {
    let l = &c.limits;
    if l.per_user_rate > 0 {
        positive("limits.per_user_burst", l.per_user_burst > 0)?;
    }
    if l.per_ip_rate > 0 {
        positive("limits.per_ip_burst", l.per_ip_burst > 0)?;
    }
    if l.ticket_poll_rate > 0 {
        positive("limits.ticket_poll_burst", l.ticket_poll_burst > 0)?;
    }
    if l.relay_per_ip_rate > 0 {
        positive("limits.relay_per_ip_burst", l.relay_per_ip_burst > 0)?;
    }
    Ok(())
}

/// `[store]` and the ticket bounds: timeouts, breaker, URLs for the store kind, key prefix,
/// token and replay lifetimes.
fn check_store(c: &Config) -> Result<(), ConfigError> {
    positive("store.timeout", !c.store.timeout.is_zero())?;
    positive("store.pool_size", c.store.pool_size > 0)?;
    positive("store.breaker_threshold", c.store.breaker_threshold > 0)?;
    positive(
        "store.breaker_cooldown",
        !c.store.breaker_cooldown.is_zero(),
    )?;
    positive("store.sync_interval", !c.store.sync_interval.is_zero())?;
    let redis_url = |key: &str, url: &str| {
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("redis" | "rediss") => Ok(()),
            _ => Err(ConfigError::invalid(
                key,
                format!(
                    "`{}` is not a redis:// or rediss:// URL",
                    super::redact_url(url)
                ),
            )),
        }
    };
    match c.store.kind {
        super::StoreKind::Memory => {}
        super::StoreKind::Redis => redis_url("store.url", &c.store.url)?,
        super::StoreKind::RedisCluster => {
            if c.store.urls.is_empty() {
                return Err(ConfigError::invalid(
                    "store.urls",
                    "needs at least one seed node of the cluster (redis://host:port)",
                ));
            }
            for (i, url) in c.store.urls.iter().enumerate() {
                redis_url(&format!("store.urls.{i}"), url)?;
            }
        }
    }
    if c.store.key_prefix.is_empty() || c.store.key_prefix.contains(['{', '}']) {
        return Err(ConfigError::invalid(
            "store.key_prefix",
            "must be non-empty and free of { and } (they mark the per-sale hash tag)",
        ));
    }
    positive("store.token_ttl", !c.store.token_ttl.is_zero())?;
    positive("store.replay_ttl", !c.store.replay_ttl.is_zero())?;
    positive("queue.ticket_ttl", !c.queue.ticket_ttl.is_zero())?;
    positive("queue.max_tickets", c.queue.max_tickets > 0)?;
    Ok(())
}

/// `[delivery]`: the deliverer's bounds, its statuses and path, and how it shares orders
/// with other instances' deliverers.
fn check_delivery(c: &Config) -> Result<(), ConfigError> {
    let d = &c.delivery;
    if let super::AutoOr::Fixed(n) = d.max_in_flight {
        between("delivery.max_in_flight", n, 1, MAX_IN_FLIGHT)?;
    }
    between("delivery.min_in_flight", d.min_in_flight, 1, MAX_IN_FLIGHT)?;
    let cap = d.max_in_flight_cap;
    between(
        "delivery.max_in_flight_cap",
        cap,
        d.min_in_flight,
        MAX_IN_FLIGHT,
    )?;
    let stream = c.delivery.mode == super::DeliveryMode::Stream;
    let auto = |q: &super::QueueConfig| q.drain_rate.is_auto();
    if stream && (auto(&c.queue) || c.sales.iter().any(|s| auto(&c.queue.for_sale(s)))) {
        let why =
            "\"auto\" is steered by the lag of the gateway's own deliveries: not in stream mode";
        return Err(ConfigError::invalid("queue.drain_rate", why));
    }
    if stream && !c.store.kind.is_shared() {
        return Err(ConfigError::invalid(
            "delivery.mode",
            "\"stream\" needs a Redis store: the backend reads the Redis outbox stream",
        ));
    }
    positive("delivery.deadline", !c.delivery.deadline.is_zero())?;
    positive("delivery.max_lag", !c.delivery.max_lag.is_zero())?;
    // Another deliverer may take an order over once it sat this long unsettled. A POST in
    // flight and its confirm must end before that, or two deliverers settle one order.
    let busy = c.upstream.timeout + c.store.timeout;
    if c.store.kind.is_shared()
        && c.delivery.mode == super::DeliveryMode::Http
        && c.delivery.claim_idle <= busy
    {
        return Err(ConfigError::invalid(
            "delivery.claim_idle",
            format!(
                "must be longer than upstream.timeout + store.timeout ({}): else another \
                 instance takes orders over while their delivery is still in flight",
                humantime::format_duration(busy)
            ),
        ));
    }
    positive("delivery.retry_base", !c.delivery.retry_base.is_zero())?;
    positive(
        "delivery.breaker_threshold",
        c.delivery.breaker_threshold > 0,
    )?;
    positive(
        "delivery.breaker_cooldown",
        !c.delivery.breaker_cooldown.is_zero(),
    )?;
    // 2xx and 409 mean the backend has the order: retrying them would deliver it twice.
    if let Some(bad) = c
        .delivery
        .retry_statuses
        .iter()
        .find(|&&s| !(300..=599).contains(&s) || s == 409)
    {
        return Err(ConfigError::invalid(
            "delivery.retry_statuses",
            format!("{bad} cannot be retried: statuses 300-599 except 409 (which means delivered)"),
        ));
    }
    if c.delivery.retry_max < c.delivery.retry_base {
        return Err(ConfigError::invalid(
            "delivery.retry_max",
            "must be at least delivery.retry_base",
        ));
    }
    if !c.delivery.path.starts_with('/')
        || c.delivery.path.parse::<http::uri::PathAndQuery>().is_err()
    {
        return Err(ConfigError::invalid(
            "delivery.path",
            format!("`{}` is not an absolute path", c.delivery.path),
        ));
    }
    let path = c.delivery.path.split('?').next().unwrap_or_default();
    match crate::path::normalise(path) {
        Ok(normal) if normal == path => {}
        Ok(normal) => {
            return Err(ConfigError::invalid(
                "delivery.path",
                format!("`{path}` is not in normal form; write `{normal}`"),
            ))
        }
        Err(e) => return Err(ConfigError::invalid("delivery.path", e.reason())),
    }
    Ok(())
}

fn check_cluster(c: &Config) -> Result<(), ConfigError> {
    let k = &c.cluster;
    let id_ok = k.instance_id.len() <= 64
        && k.instance_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !id_ok {
        return Err(ConfigError::invalid(
            "cluster.instance_id",
            "at most 64 of A-Z a-z 0-9 - _ .",
        ));
    }
    if !k.advertise.is_empty()
        && k.advertise
            .parse::<http::uri::Authority>()
            .map_or(true, |a| {
                a.port_u16().is_none_or(|p| p == 0) || a.as_str().contains('@')
            })
    {
        return Err(ConfigError::invalid(
            "cluster.advertise",
            format!("`{}` is not host:port", k.advertise),
        ));
    }
    // Under 10 ms every instance would keep the store busy announcing itself.
    if k.heartbeat < Duration::from_millis(10) || k.heartbeat > Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "cluster.heartbeat",
            "must be between 10ms and 1h",
        ));
    }
    if k.member_ttl > Duration::from_secs(24 * 3600) {
        return Err(ConfigError::invalid(
            "cluster.member_ttl",
            "must be at most 24h",
        ));
    }
    if k.member_ttl < k.heartbeat.saturating_mul(2) {
        return Err(ConfigError::invalid(
            "cluster.member_ttl",
            "must be at least twice cluster.heartbeat (one late renewal is not a death)",
        ));
    }
    // Every instance verifies the tokens the others sign: one secret, set by hand.
    if c.store.kind.is_shared() && k.secret.is_empty() {
        return Err(ConfigError::invalid(
            "cluster.secret",
            "is required with a shared store: every instance signs and verifies sale tokens with it",
        ));
    }
    if !k.secret.is_empty() && k.secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::invalid(
            "cluster.secret",
            format!("must be at least {MIN_SECRET_LEN} characters"),
        ));
    }
    Ok(())
}

/// The shortest `cluster.secret`: 16 characters of a random password are ~96 bits.
const MIN_SECRET_LEN: usize = 16;

fn check_log(c: &Config) -> Result<(), ConfigError> {
    tracing_subscriber::EnvFilter::builder()
        .parse(&c.log.level)
        .map(|_| ())
        .map_err(|e| ConfigError::invalid("log.level", format!("`{}`: {e}", c.log.level)))
}
