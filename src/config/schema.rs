//! The config's sections as Rust types: their keys, defaults and how secrets are redacted
//! when the effective config is printed.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::redact::redacted;
use super::store_delivery::{DeliveryConfig, StoreConfig};
use super::{DrainRate, Timestamp};

/// Everything flashgate reads from its config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners and per-connection protection limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// The backend everything that is not a sale route is proxied to.
    pub upstream: UpstreamConfig,
    /// Default queue settings for every sale.
    #[serde(default)]
    pub queue: QueueConfig,
    /// The sales this gateway shapes traffic for.
    #[serde(default, rename = "sale")]
    pub sales: Vec<SaleConfig>,
    /// Where the user's identity comes from.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Rate limits on sale routes.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where stock, tokens and orders live.
    #[serde(default)]
    pub store: StoreConfig,
    /// How reserved orders reach the backend.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The admin API on the admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// How this instance announces itself to the others sharing the store.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The HTML pages: waiting room, countdown, busy page.
    #[serde(default)]
    pub pages: PagesConfig,
    /// Logging format and level.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[server]`: listeners and per-connection protection limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the public listener (sale routes and proxied traffic).
    pub listen: SocketAddr,
    /// Address of the admin listener (`/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Open client connections beyond this are closed at once instead of waiting.
    pub max_connections: usize,
    /// Connections the kernel queues for each listener before they are accepted; beyond
    /// it their SYNs are dropped. Default: the system's cap, `net.core.somaxconn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    /// A client must send a request's complete header within this time once it started
    /// one (slowloris guard), and start talking this soon on a new connection.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a keep-alive connection may idle between requests before it is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Largest request body accepted, in bytes; larger ones get 413 `body_too_large`.
    pub body_limit: u64,
    /// A request's body must arrive within this time once its header has (slow-body
    /// guard): a sale request's (else 408 `request_timeout`) and a proxied one's.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Runtime worker threads; 0 means one per CPU core.
    pub threads: usize,
    /// On SIGTERM/SIGINT, readiness turns 503 at once and the listeners keep accepting
    /// this long, so that balancers notice and stop sending before they close.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Once the listeners close, in-flight and queued requests get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// This instance's own state: the store epochs it has loaded (so a store that lost
    /// its data is noticed even after a restart) and the memory store's undelivered
    /// orders across a graceful restart. Default: `<config file name>.data/` beside the
    /// config file (config text from elsewhere: none); `""` keeps nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Connections open at once from one client address, on each listener (0 = no cap);
    /// trusted proxies are exempt.
    pub max_connections_per_ip: usize,
    /// Largest request header block accepted, in bytes.
    pub max_header_size: usize,
    /// Concurrent streams one h2 connection may open.
    pub h2_max_streams: u32,
    /// Streams one h2 connection may cancel before it is sent GOAWAY (rapid reset guard).
    pub h2_max_cancelled_streams: u32,
    /// Balancers (CIDR blocks or addresses) whose `X-Forwarded-For` and PROXY headers name
    /// the client; empty: nobody's.
    pub trusted_proxies: Vec<String>,
    /// Every public connection starts with a PROXY protocol v1/v2 header (an L4 balancer
    /// in front); connections without one are refused.
    pub proxy_protocol: bool,
    /// Terminate TLS on the public listener with this certificate and key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// `server.tls`: PEM files of the certificate chain and its private key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: String,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            max_connections: 10_000,
            backlog: None,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            body_limit: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            threads: 0,
            shutdown_grace: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            data_dir: None,
            max_connections_per_ip: 1000,
            max_header_size: 64 * 1024,
            h2_max_streams: 100,
            h2_max_cancelled_streams: 200,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            tls: None,
        }
    }
}

/// `[upstream]`: the backend behind the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, `http://host:port[/prefix]`.
    pub url: String,
    /// Time allowed for the upstream to answer with a response head; past it, 504.
    #[serde(default = "UpstreamConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time allowed to open a TCP connection to the upstream; past it, 502.
    #[serde(
        default = "UpstreamConfig::default_connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept open to the upstream.
    #[serde(default = "UpstreamConfig::default_pool_size")]
    pub pool_size: usize,
    /// An idle pooled connection is closed after this long.
    #[serde(
        default = "UpstreamConfig::default_pool_idle_timeout",
        with = "humantime_serde"
    )]
    pub pool_idle_timeout: Duration,
    /// Pass the client's Host header to the upstream (true) or use the upstream's own (false).
    #[serde(default = "default_true")]
    pub preserve_host: bool,
    /// Connections open to the upstream at once, idle and busy, so also proxied requests in
    /// flight; past it a request is answered 503 `upstream_busy`.
    #[serde(default = "UpstreamConfig::default_max_connections")]
    pub max_connections: usize,
}

impl UpstreamConfig {
    fn default_max_connections() -> usize {
        1024
    }

    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_pool_size() -> usize {
        256
    }
    fn default_pool_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
}

fn default_true() -> bool {
    true
}

/// What to do with an order that finds the sale's queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Answer 503 `queue_full` with Retry-After.
    Reject,
    /// Answer 303 to `queue.redirect_url` (a busy page).
    Redirect,
}

/// How an admitted order is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    /// Hold the request until its outcome, up to `max_wait`.
    Wait,
    /// Answer 202 with a ticket at once.
    Async,
}

/// `[queue]`: the default queue settings of every sale.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most requests one sale's queue holds; overflow is refused, never buffered.
    pub capacity: usize,
    /// Queued requests released to the order workers per second (the total across the
    /// instances sharing a store), or `"auto"`: steered between `drain_min` and `drain_max`
    /// so that the outbox lag stays under `delivery.max_lag`.
    pub drain_rate: DrainRate,
    /// With `drain_rate = "auto"`: the least it goes down to (and starts at).
    pub drain_min: u32,
    /// With `drain_rate = "auto"`: the most it goes up to.
    pub drain_max: u32,
    /// Concurrent order workers per sale.
    pub workers: usize,
    /// What a full queue answers.
    pub overflow: Overflow,
    /// Busy page for `overflow = "redirect"`; empty means the built-in page.
    pub redirect_url: String,
    /// `wait` or `async` answers to admitted orders.
    pub response: ResponseMode,
    /// In wait mode, how long a request is held before it is answered 202 with its ticket.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Queued requests may reach remaining stock × this factor before orders are refused as sold out.
    pub admit_factor: f64,
    /// A finished ticket can be looked up for this long.
    #[serde(with = "humantime_serde")]
    pub ticket_ttl: Duration,
    /// Most tickets remembered at once; the oldest finished ones are forgotten first.
    pub max_tickets: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            drain_rate: DrainRate::Fixed(500),
            drain_min: 10,
            drain_max: 1_000,
            workers: 16,
            overflow: Overflow::Reject,
            redirect_url: String::new(),
            response: ResponseMode::Wait,
            max_wait: Duration::from_secs(5),
            admit_factor: 1.5,
            ticket_ttl: Duration::from_secs(600),
            max_tickets: 200_000,
        }
    }
}

/// One `[[sale]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SaleConfig {
    /// Stock keeping unit: the sale's id in URLs and store keys (`[A-Za-z0-9_.-]`, 1–64 chars).
    pub sku: String,
    /// Units for sale.
    pub stock: u64,
    /// Opening time (RFC 3339); absent means open from start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Timestamp>,
    /// Closing time (RFC 3339); absent means open until sold out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    /// Most units one user may reserve in this sale.
    #[serde(default = "SaleConfig::default_per_user_limit")]
    pub per_user_limit: u32,
    /// How long before `starts_at` orders join the pre-queue, shuffled at the opening;
    /// absent means no pre-queue (orders before `starts_at` are refused).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub prequeue: Option<Duration>,
    /// Overrides of `[queue]` for this sale.
    #[serde(default, skip_serializing_if = "QueueOverrides::is_empty")]
    pub queue: QueueOverrides,
}

impl SaleConfig {
    fn default_per_user_limit() -> u32 {
        1
    }
}

/// Per-sale overrides of the `[queue]` defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueOverrides {
    /// Overrides `queue.capacity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
    /// Overrides `queue.drain_rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_rate: Option<DrainRate>,
    /// Overrides `queue.workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

impl QueueOverrides {
    fn is_empty(&self) -> bool {
        self.capacity.is_none() && self.drain_rate.is_none() && self.workers.is_none()
    }
}

/// `[pages]`: where the HTML page templates come from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagesConfig {
    /// Directory with `wait.html`, `countdown.html`, `busy.html` (any subset); empty: the
    /// built-in pages (the files shipped in `config/pages/`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dir: String,
}

/// `[admin]`: the admin API's credentials and the admin listener's connection caps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token the admin API requires; empty turns the API off (every call 401).
    #[serde(skip_serializing_if = "String::is_empty", serialize_with = "redacted")]
    pub token: String,
    /// Connections the admin listener keeps open at once. The other instances' ticket
    /// relays use at most 24 each; the rest is the probes' and operators'.
    pub max_connections: usize,
    /// Connections from one source address at once (0 = no cap): no one address (an
    /// instance's relays, a stuck client) can take the probes' room.
    pub max_connections_per_ip: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token: String::new(),
            max_connections: 256,
            max_connections_per_ip: 64,
        }
    }
}

/// `[cluster]`: how this instance announces itself in the store, so that the instances
/// sharing it know each other.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This instance's id among them; empty = drawn at each start (`<pid>-<random>`).
    pub instance_id: String,
    /// `host:port` where the other instances reach this one; empty = the admin listener's
    /// bound address.
    pub advertise: String,
    /// How often the announcement is renewed.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How long an announcement lasts unrenewed: an instance silent this long is gone.
    #[serde(with = "humantime_serde")]
    pub member_ttl: Duration,
    /// Signs and verifies sale tokens (HMAC-SHA256); the same on every instance sharing
    /// the store, and required with one (at least 16 characters). Empty with the memory
    /// store: a random one per process. Never printed.
    #[serde(skip_serializing_if = "String::is_empty", serialize_with = "redacted")]
    pub secret: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            instance_id: String::new(),
            advertise: String::new(),
            heartbeat: Duration::from_secs(1),
            member_ttl: Duration::from_secs(5),
            secret: String::new(),
        }
    }
}

/// `[identity]`: who the user is, as the auth layer in front says.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Request header carrying the user id.
    pub header: String,
    /// When set, the header must be `user.signature` with signature = hex HMAC-SHA256 of
    /// the user id under this secret; forged ids are refused 401 `bad_identity`.
    #[serde(skip_serializing_if = "String::is_empty", serialize_with = "redacted")]
    pub secret: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            header: "x-user-id".to_owned(),
            secret: String::new(),
        }
    }
}

/// `[limits]`: request rates on sale routes, per user and per client IP.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sale requests per second one user may make; 0 turns the limit off.
    pub per_user_rate: u32,
    /// Requests a user may make in a burst above the rate.
    pub per_user_burst: u32,
    /// Sale requests per second from one client IP; 0 (default) turns it off, since crowds
    /// share NATs and load balancers.
    pub per_ip_rate: u32,
    /// Requests an IP may make in a burst above the rate.
    pub per_ip_burst: u32,
    /// Polls per second of one ticket that another instance must answer (relayed to its
    /// owner, or read from the store); 0 turns the limit off.
    pub ticket_poll_rate: u32,
    /// Polls of one ticket in a burst above that rate.
    pub ticket_poll_burst: u32,
    /// Polls per second from one client IP that another instance must answer; 0 turns the
    /// limit off.
    pub relay_per_ip_rate: u32,
    /// Such polls an IP may make in a burst above that rate.
    pub relay_per_ip_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_user_rate: 5,
            per_user_burst: 10,
            per_ip_rate: 0,
            per_ip_burst: 100,
            // A waiting page polls its ticket once a second.
            ticket_poll_rate: 2,
            ticket_poll_burst: 10,
            // Off, like `per_ip_rate`: a crowd behind a NAT, or behind a balancer whose
            // addresses are not trusted, shares one address.
            relay_per_ip_rate: 0,
            relay_per_ip_burst: 200,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// `[log]`: format and level.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `flashgate=debug,hyper=warn`, …
    pub level: String,
    /// One line per request, at info, target `access`: listener, peer, method, path
    /// (without the query), status, bytes, duration_ms.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
            access: false,
        }
    }
}

impl Config {
    /// The local state directory in force (`""`: none).
    pub fn data_dir(&self) -> &str {
        self.server.data_dir.as_deref().unwrap_or("")
    }

    /// The queue settings of one sale: its overrides over the `[queue]` defaults.
    pub fn queue_for(&self, sale: &SaleConfig) -> QueueConfig {
        self.queue.for_sale(sale)
    }
}

impl QueueConfig {
    /// The drain rate a sale starts at: the fixed one, or `drain_min` for `"auto"`.
    pub fn start_rate(&self) -> u32 {
        self.drain_rate.or(self.drain_min)
    }

    /// The queue settings of `sale`: its overrides over these defaults.
    pub fn for_sale(&self, sale: &SaleConfig) -> QueueConfig {
        let mut q = self.clone();
        if let Some(c) = sale.queue.capacity {
            q.capacity = c;
        }
        if let Some(r) = sale.queue.drain_rate {
            q.drain_rate = r;
        }
        if let Some(w) = sale.queue.workers {
            q.workers = w;
        }
        q
    }
}
