//! The `[store]` and `[delivery]` sections: where stock, tokens and orders are kept, and
//! how reserved orders reach the backend.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auto::InFlight;
use super::redact::{redacted, redacted_url, redacted_urls};

/// Which store implementation holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process: one gateway instance, and `flashgate demo`.
    Memory,
    /// One Redis (`store.url`): many instances share it.
    Redis,
    /// A Redis Cluster (`store.urls`, seed nodes): each sale's keys in one slot.
    #[serde(rename = "redis-cluster")]
    RedisCluster,
}

impl StoreKind {
    /// True for a store other instances may share (Redis, a Redis Cluster).
    pub fn is_shared(self) -> bool {
        self != Self::Memory
    }
}

/// `[store]`: where stock, tokens and orders live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The implementation.
    pub kind: StoreKind,
    /// Redis URL, `redis://` or `rediss://` (TLS); a password in it is never printed.
    #[serde(serialize_with = "redacted_url")]
    pub url: String,
    /// `kind = "redis-cluster"`: seed nodes (any few of the cluster's), each `redis://` or
    /// `rediss://`; passwords in them are never printed.
    #[serde(
        serialize_with = "redacted_urls",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    /// Connections to Redis; each is multiplexed, so a few carry many concurrent calls.
    pub pool_size: usize,
    /// Prefix of every Redis key: `{prefix}:{{sku}}:…`.
    pub key_prefix: String,
    /// Bound on any single store call; past it the call counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Store failures in a row that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker fails calls at once before one call probes the store.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// How often each sale's stock is read back from the store, so that every instance
    /// learns of a sell-out (or restored stock) another instance caused.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How long an issued purchase token stays valid.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// How long a spent token's outcome is kept, so a resubmission gets the same answer.
    #[serde(with = "humantime_serde")]
    pub replay_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            url: "redis://127.0.0.1:6379".to_owned(),
            urls: Vec::new(),
            pool_size: 8,
            key_prefix: "flashgate".to_owned(),
            timeout: Duration::from_secs(1),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(1),
            sync_interval: Duration::from_millis(250),
            token_ttl: Duration::from_secs(300),
            replay_ttl: Duration::from_secs(3600),
        }
    }
}

/// How reserved orders reach the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// The gateway POSTs each order to the backend.
    Http,
    /// Orders stay in the Redis outbox stream for the backend's own consumer group.
    Stream,
}

/// `[delivery]`: how reserved orders reach the backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `http` (the gateway delivers) or `stream` (the backend consumes the outbox stream).
    pub mode: DeliveryMode,
    /// Path on the upstream that orders are POSTed to.
    pub path: String,
    /// Orders POSTed to the backend at once, at most: a number, or `"auto"` (found from
    /// the backend's latency and refusals, between `min_in_flight` and `max_in_flight_cap`).
    pub max_in_flight: InFlight,
    /// With `max_in_flight = "auto"`: the least the limit goes down to.
    pub min_in_flight: usize,
    /// With `max_in_flight = "auto"`: the most the limit goes up to.
    pub max_in_flight_cap: usize,
    /// Attempts per order before it counts as refused for good (0 = until the deadline).
    pub retries: u32,
    /// With `queue.drain_rate = "auto"`: the outbox lag (the age of the oldest order the
    /// backend has not taken yet) the drain is steered to stay under.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// Backend answers that mean "not now": the order is tried again, with backoff. A 5xx
    /// other than 501, 503 and 505 is always tried again (the order may be applied: its
    /// fate is unknown), and so is no answer at all. Any other answer that is not 2xx or
    /// 409 refuses the order for good (it is compensated at once).
    pub retry_statuses: Vec<u16>,
    /// An order not delivered this long after it was reserved is compensated.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// First wait before retrying an order; doubles each attempt, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest wait between two attempts of an order.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Failed deliveries in a row that open the breaker toward the backend.
    pub breaker_threshold: u32,
    /// How long an open breaker holds deliveries back before one probes the backend.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Redis store: orders another instance's deliverer has held this long without
    /// settling are taken over (it probably died). Keep it above `retry_max`.
    #[serde(with = "humantime_serde")]
    pub claim_idle: Duration,
    /// Signs every delivery (`Flashgate-Signature`, HMAC-SHA256) so that the backend can
    /// tell the gateway's orders from a client's; empty = unsigned. Never printed.
    #[serde(skip_serializing_if = "String::is_empty", serialize_with = "redacted")]
    pub signing_secret: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::Http,
            path: "/orders".to_owned(),
            max_in_flight: InFlight::Auto,
            min_in_flight: 1,
            max_in_flight_cap: 256,
            retries: 0,
            max_lag: Duration::from_secs(2),
            retry_statuses: vec![408, 425, 429, 503],
            deadline: Duration::from_secs(600),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(2),
            claim_idle: Duration::from_secs(60),
            signing_secret: String::new(),
        }
    }
}
