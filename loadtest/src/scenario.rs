//! A scenario file: who the crowd is, what stands in front of it, and what must hold after.
//!
//! The `[gateway]` table is a flashgate config (the keys of `config/flashgate.toml`); the load
//! test fills in what it owns (listeners, upstream, store URL, admin token) and runs it.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

pub use crate::operator::{Action, Event};

/// One load-test scenario, as read from `loadtest/scenarios/*.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, printed in the report.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Which store the gateway uses: the in-process memory store, a redis-server or a
    /// three-master Redis Cluster started for the run.
    #[serde(default)]
    pub store: StoreChoice,
    /// Gateway instances behind the crowd, sharing the store and the backend; user i goes to
    /// instance i mod n, and each of its retries to the next one (as a load balancer would).
    #[serde(default = "Scenario::default_instances")]
    pub instances: usize,
    /// The buyers.
    pub crowd: Crowd,
    /// The crowd's waves, one a sale, each with its own users and arrival window; none:
    /// `crowd.users` come for the file's first sale.
    #[serde(default, rename = "wave")]
    pub waves: Vec<Wave>,
    /// The demo backend the orders are delivered to.
    #[serde(default)]
    pub backend: Backend,
    /// Things that happen to the system during the run.
    #[serde(default, rename = "event")]
    pub events: Vec<Event>,
    /// A seeded random schedule of faults during the run.
    #[serde(default)]
    pub chaos: Option<Chaos>,
    /// Outcomes the scenario promises beyond the invariants every run checks.
    #[serde(default)]
    pub expect: Expect,
    /// The gateway's config (flashgate TOML); needs at least one `[[gateway.sale]]`.
    pub gateway: toml::Table,
}

/// Faults drawn at random from a seed: which kinds, how many, when and for how long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chaos {
    /// The seed (0: a random one, printed); `--seed` overrides it.
    #[serde(default)]
    pub seed: u64,
    /// How many faults.
    pub faults: u32,
    /// Faults start within this long from the crowd's start.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Shortest fault.
    #[serde(default = "Chaos::default_shortest", with = "humantime_serde")]
    pub shortest: Duration,
    /// Longest fault.
    #[serde(default = "Chaos::default_longest", with = "humantime_serde")]
    pub longest: Duration,
    /// The kinds of fault to draw from.
    pub kinds: Vec<FaultKind>,
}

impl Chaos {
    fn default_shortest() -> Duration {
        Duration::from_millis(200)
    }
    fn default_longest() -> Duration {
        Duration::from_millis(1500)
    }
}

/// A kind of fault a chaos schedule draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// redis-server SIGSTOPped, then SIGCONTinued.
    RedisPause,
    /// redis-server SIGKILLed, down a while, started again on its append-only file.
    RedisRestart,
    /// One instance's link to Redis delayed, paused, replies held, reset or blackholed.
    RedisLink,
    /// One instance's link to the backend, likewise.
    BackendLink,
    /// The backend answers every order 503.
    BackendErrors,
    /// The backend takes far longer per order.
    BackendSlow,
    /// One gateway instance SIGKILLed, then started again on the same config.
    GatewayRestart,
}

impl FaultKind {
    /// Whether this kind needs a redis-server in the run (a killed gateway would take the
    /// memory store's orders with it).
    pub fn needs_redis(self) -> bool {
        matches!(
            self,
            Self::RedisPause | Self::RedisRestart | Self::RedisLink | Self::GatewayRestart
        )
    }
}

/// Which store backs the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreChoice {
    /// The gateway's in-process store.
    #[default]
    Memory,
    /// A redis-server started (and stopped) by the load test.
    Redis,
    /// A Redis Cluster of three masters started (and stopped) by the load test; the sale's
    /// keys live on whichever master serves its slot.
    #[serde(rename = "redis-cluster")]
    RedisCluster,
}

impl StoreChoice {
    /// True for a store several gateway instances can share.
    pub fn is_shared(self) -> bool {
        self != Self::Memory
    }

    /// Its name in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::RedisCluster => "redis-cluster",
        }
    }
}

/// The crowd: how many users, how they arrive and how they behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crowd {
    /// Distinct users; each fetches a token and orders once (with waves: each wave's own).
    #[serde(default)]
    pub users: u64,
    /// New users per second (open loop); 0 = everybody at once.
    #[serde(default)]
    pub arrival_rate: u64,
    /// Keep-alive connections the crowd shares (requests beyond wait for one).
    #[serde(default = "Crowd::default_connections")]
    pub connections: usize,
    /// The sale opens this long after the crowd starts; users arriving earlier wait and retry.
    #[serde(default, with = "humantime_serde")]
    pub sale_opens_in: Option<Duration>,
    /// Order requests a user fires at once with the same token (double clicks).
    #[serde(default = "Crowd::default_clicks")]
    pub clicks: u32,
    /// Times a user resubmits its token after learning the outcome (must get the same answer).
    #[serde(default)]
    pub replays: u32,
    /// Retries (same token) after a refusal that says "try again": queue full, rate limited,
    /// store unavailable. Waits the answer's Retry-After first.
    #[serde(default = "Crowd::default_retries")]
    pub retries: u32,
    /// Share of users (0–1) who leave at their first retryable refusal instead of retrying.
    #[serde(default)]
    pub abandon: f64,
    /// How long one request may take before it counts as unanswered.
    #[serde(default = "Crowd::default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How the balancer spreads users over the instances, as weights (e.g. `[80, 20]`);
    /// empty: user i goes to instance i mod n. Retries go to the next instance either way.
    #[serde(default)]
    pub spread: Vec<u32>,
    /// How often a queued ticket is polled; unset: as its Retry-After says (1 s). A short
    /// interval times each buyer's service finely enough to measure the line's fairness.
    #[serde(default, with = "humantime_serde")]
    pub poll_every: Option<Duration>,
    /// Upper bound of the whole crowd phase; users still going then count as unfinished.
    #[serde(default = "Crowd::default_max_duration", with = "humantime_serde")]
    pub max_duration: Duration,
}

impl Scenario {
    fn default_instances() -> usize {
        1
    }
}

impl Crowd {
    fn default_connections() -> usize {
        256
    }
    fn default_clicks() -> u32 {
        1
    }
    fn default_retries() -> u32 {
        3
    }
    fn default_request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_max_duration() -> Duration {
        Duration::from_secs(300)
    }
}

/// One sale's share of the crowd: who comes for it, and when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// The sale they come for: in the file, or put by an event before `from`.
    pub sku: String,
    /// Distinct users.
    pub users: u64,
    /// The first arrival, from the crowd's start.
    #[serde(default, with = "humantime_serde")]
    pub from: Duration,
    /// New users per second (open loop); 0 = all at once.
    #[serde(default)]
    pub arrival_rate: u64,
    /// Every unit of this sale must be sold by the end.
    #[serde(default)]
    pub sold_out: bool,
    /// Units handed back by the backend's cancels must have been sold again.
    #[serde(default)]
    pub resold: bool,
}

/// The demo backend's behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Time the backend takes to apply each order.
    #[serde(default, with = "humantime_serde")]
    pub delay: Duration,
    /// Orders it applies at once (each taking `delay`); unset: as many as come.
    #[serde(default)]
    pub workers: Option<usize>,
    /// With `workers`: orders it holds waiting for a worker; one more is shed with 503.
    #[serde(default)]
    pub queue: usize,
    /// The share of its orders (0 to 1) the backend cancels as unpaid, `cancel_after` after
    /// each arrived, through the gateway's `POST /admin/orders/{id}/cancel`.
    #[serde(default)]
    pub cancel_rate: f64,
    /// The payment window: how long after an order arrived the backend cancels it.
    #[serde(default = "Backend::default_cancel_after", with = "humantime_serde")]
    pub cancel_after: Duration,
}

impl Default for Backend {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            workers: None,
            queue: 0,
            cancel_rate: 0.0,
            cancel_after: Self::default_cancel_after(),
        }
    }
}

impl Backend {
    fn default_cancel_after() -> Duration {
        Duration::from_secs(1)
    }
}

/// Scenario-specific promises, checked with the invariants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every unit must be sold by the end.
    #[serde(default)]
    pub sold_out: bool,
    /// Units handed back by the backend's cancels must have been sold again: the backend
    /// applied more units than the stock.
    #[serde(default)]
    pub resold: bool,
    /// The store must have refused at least one request as unavailable (proves the fault hit).
    #[serde(default)]
    pub store_outage_seen: bool,
    /// With a backend of limited `workers`: at most this share of the orders it applied
    /// may have been shed with 503 (0.1: one delivery shed for ten orders), so that the
    /// deliverer found the backend's pace instead of flooding it.
    #[serde(default)]
    pub shed_max: Option<f64>,
    /// How long delivery may take to settle after the crowd is done.
    #[serde(default = "Expect::default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// The sale's drain rate (the total across instances) must be what the backend got:
    /// (orders − 1) / (last arrival − first arrival) within this share of it (0.05: ±5 %).
    /// Measured on first arrivals at the backend, so the queue must stay busy from the
    /// first order to the last or the pauses count against it.
    #[serde(default)]
    pub drain_tolerance: Option<f64>,
    /// No sliding second may bring the backend more first arrivals than the drain rate
    /// times this (1.1: 10 % above it, rounded up): several instances must not add up to
    /// more than the one budget they share.
    #[serde(default)]
    pub burst_limit: Option<f64>,
    /// At most this share of the buyers served may be overtaken by one admitted at least a
    /// second after them (0.01: 1 %).
    #[serde(default)]
    pub overtaken_max: Option<f64>,
    /// The 90th percentile of |real wait − promised wait| / real wait must stay under this.
    #[serde(default)]
    pub eta_error_p90_max: Option<f64>,
    /// With a pre-queue: the winners' mean joining time may be at most this far from
    /// everyone's (a uniform shuffle keeps them together; first come would not).
    #[serde(default, with = "humantime_serde")]
    pub winners_mean_gap_max: Option<Duration>,
}

impl Default for Expect {
    /// What a scenario without `[expect]` gets: the same as an empty `[expect]`.
    fn default() -> Self {
        Self {
            sold_out: false,
            resold: false,
            store_outage_seen: false,
            shed_max: None,
            settle: Self::default_settle(),
            drain_tolerance: None,
            burst_limit: None,
            overtaken_max: None,
            eta_error_p90_max: None,
            winners_mean_gap_max: None,
        }
    }
}

impl Expect {
    fn default_settle() -> Duration {
        Duration::from_secs(120)
    }
}

/// A scenario that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ScenarioError::Invalid {
            path: shown,
            message,
        })
    }

    /// Parses and checks scenario text; the error names the offending key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        let s: Scenario = serde_path_to_error::deserialize(de)
            .map_err(|e| format!("key `{}`: {}", e.path(), e.inner().message()))?;
        s.check_waves()?;
        if s.instances == 0 {
            return Err("key `instances`: must be at least 1".into());
        }
        if s.instances > 1 && !s.store.is_shared() {
            return Err(
                "key `instances`: instances share the store, so more than one needs store = \"redis\" or \"redis-cluster\""
                    .into(),
            );
        }
        if let Some(t) = s.expect.drain_tolerance {
            if !(t > 0.0 && t < 1.0) {
                return Err("key `expect.drain_tolerance`: must be above 0 and below 1".into());
            }
        }
        if let Some(b) = s.expect.burst_limit {
            if !(b.is_finite() && b >= 1.0) {
                return Err("key `expect.burst_limit`: must be at least 1".into());
            }
        }
        if s.backend.workers == Some(0) {
            return Err("key `backend.workers`: must be at least 1".into());
        }
        if s.expect.shed_max.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
            return Err("key `expect.shed_max`: must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&s.backend.cancel_rate) {
            return Err("key `backend.cancel_rate`: must be between 0 and 1".into());
        }
        if s.chaos.is_some() && s.store == StoreChoice::RedisCluster {
            // The fault proxies and the Redis faults know one server, not a cluster's
            // nodes and the redirections between them.
            return Err(
                "key `chaos`: chaos faults are not supported with store = \"redis-cluster\"; use store = \"redis\""
                    .into(),
            );
        }
        if let Some(c) = &s.chaos {
            if c.kinds.is_empty() {
                return Err("key `chaos.kinds`: name at least one kind of fault".into());
            }
            if c.shortest > c.longest || c.shortest.is_zero() {
                return Err(
                    "key `chaos.shortest`: must be above 0 and at most chaos.longest".into(),
                );
            }
            if s.store != StoreChoice::Redis && c.kinds.iter().any(|k| k.needs_redis()) {
                return Err("key `chaos.kinds`: Redis faults need store = \"redis\"".into());
            }
        }
        if s.crowd.connections == 0 {
            return Err("key `crowd.connections`: must be at least 1".into());
        }
        if s.crowd.clicks == 0 {
            return Err("key `crowd.clicks`: must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&s.crowd.abandon) {
            return Err("key `crowd.abandon`: must be between 0 and 1".into());
        }
        let sales = s.gateway.get("sale").and_then(toml::Value::as_array);
        if sales.is_none_or(|a| a.is_empty()) {
            return Err("key `gateway.sale`: at least one [[gateway.sale]] is needed".into());
        }
        for e in &s.events {
            match &e.action {
                Action::RestartRedis { .. } if s.store != StoreChoice::Redis => {
                    return Err("key `event.action`: restart_redis needs store = \"redis\"".into())
                }
                Action::PutSale { via, .. } | Action::EndSale { via, .. }
                    if *via >= s.instances =>
                {
                    return Err(format!(
                        "key `event.via`: instance {via} of {} (they are counted from 0)",
                        s.instances
                    ))
                }
                Action::PutSale { sale, .. } if e.action.creates().is_none() => {
                    return Err(format!(
                        "key `event.sale`: names no sku ({} keys given)",
                        sale.len()
                    ))
                }
                _ => {}
            }
        }
        Ok(s)
    }

    /// The crowd's waves: the scenario's, or one of `crowd.users` for the file's first sale.
    pub fn waves(&self) -> Vec<Wave> {
        if !self.waves.is_empty() {
            return self.waves.clone();
        }
        let sku = self
            .gateway
            .get("sale")
            .and_then(toml::Value::as_array)
            .and_then(|a| a.first())
            .and_then(|s| s.get("sku"))
            .and_then(toml::Value::as_str)
            .unwrap_or_default();
        vec![Wave {
            sku: sku.to_owned(),
            users: self.crowd.users,
            from: Duration::ZERO,
            arrival_rate: self.crowd.arrival_rate,
            sold_out: self.expect.sold_out,
            resold: self.expect.resold,
        }]
    }

    /// Users in every wave together.
    pub fn users(&self) -> u64 {
        self.waves().iter().map(|w| w.users).sum()
    }

    /// One crowd for the first sale, or waves that each name their users and a sale the
    /// run has.
    fn check_waves(&self) -> Result<(), String> {
        if self.waves.is_empty() {
            return match self.crowd.users {
                0 => Err("key `crowd.users`: must be at least 1".into()),
                _ => Ok(()),
            };
        }
        let per_wave = [
            ("crowd.users", self.crowd.users != 0),
            ("crowd.arrival_rate", self.crowd.arrival_rate != 0),
            ("crowd.sale_opens_in", self.crowd.sale_opens_in.is_some()),
            ("expect.sold_out", self.expect.sold_out),
            ("expect.resold", self.expect.resold),
        ];
        if let Some((key, _)) = per_wave.iter().find(|(_, set)| *set) {
            return Err(format!(
                "key `{key}`: with [[wave]], each wave says it for its own sale"
            ));
        }
        let in_file = |sku: &str| {
            self.gateway
                .get("sale")
                .and_then(toml::Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .any(|s| s.get("sku").and_then(toml::Value::as_str) == Some(sku))
                })
        };
        for (n, w) in self.waves.iter().enumerate() {
            if self.waves[..n].iter().any(|o| o.sku == w.sku) {
                return Err(format!(
                    "key `wave.sku`: `{}` has two waves; give it one",
                    w.sku
                ));
            }
            if w.users == 0 {
                return Err(format!(
                    "key `wave.users`: the wave for `{}` needs at least 1",
                    w.sku
                ));
            }
            let put = self
                .events
                .iter()
                .any(|e| e.at <= w.from && e.action.creates() == Some(w.sku.as_str()));
            if !in_file(&w.sku) && !put {
                return Err(format!(
                    "key `wave.sku`: `{}` is neither a [[gateway.sale]] nor put by an event before the wave",
                    w.sku
                ));
            }
        }
        Ok(())
    }

    /// The gateway config text for this run: the scenario's `[gateway]` with the parts the load
    /// test owns filled in, and the first sale opening at `opens_at` when the crowd waits for it.
    pub fn gateway_config(&self, owned: &Owned, opens_at: Option<SystemTime>) -> String {
        let mut table = self.gateway.clone();
        let section = |t: &mut toml::Table, name: &str| -> toml::Table {
            t.remove(name)
                .and_then(|v| v.as_table().cloned())
                .unwrap_or_default()
        };
        let mut server = section(&mut table, "server");
        server.insert("listen".into(), owned.listen.to_string().into());
        server.insert("admin_listen".into(), owned.admin_listen.to_string().into());
        // The whole simulated crowd comes from 127.0.0.1: no per-address cap unless the
        // scenario asks for one.
        server
            .entry("max_connections_per_ip")
            .or_insert_with(|| 0.into());
        // No balancer watches /readyz here: the stop at the end need not wait out a grace
        // for one (5 s by default, per instance, for every run).
        server
            .entry("shutdown_grace")
            .or_insert_with(|| "0s".into());
        table.insert("server".into(), server.into());
        let mut delivery = section(&mut table, "delivery");
        delivery.insert(
            "signing_secret".into(),
            signing_secret(&owned.admin_token).into(),
        );
        table.insert("delivery".into(), delivery.into());
        let mut upstream = section(&mut table, "upstream");
        upstream.insert("url".into(), format!("http://{}", owned.backend).into());
        table.insert("upstream".into(), upstream.into());
        let mut admin = section(&mut table, "admin");
        admin.insert("token".into(), owned.admin_token.clone().into());
        table.insert("admin".into(), admin.into());
        if let Some(shared) = &owned.store {
            let mut store = section(&mut table, "store");
            match shared {
                SharedStore::Redis(url) => {
                    store.insert("kind".into(), "redis".into());
                    store.insert("url".into(), url.clone().into());
                }
                SharedStore::Cluster(urls) => {
                    store.insert("kind".into(), "redis-cluster".into());
                    let seeds: Vec<toml::Value> = urls.iter().cloned().map(Into::into).collect();
                    store.insert("urls".into(), seeds.into());
                }
            }
            table.insert("store".into(), store.into());
            // The instances share one token secret, as a fleet must.
            let mut cluster = section(&mut table, "cluster");
            cluster.insert(
                "secret".into(),
                format!("flashgate-loadtest-tokens-{}", owned.admin_token).into(),
            );
            table.insert("cluster".into(), cluster.into());
        }
        if let Some(at) = opens_at {
            let stamp = time::OffsetDateTime::from(at)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            if let Some(first) = table
                .get_mut("sale")
                .and_then(toml::Value::as_array_mut)
                .and_then(|a| a.first_mut())
                .and_then(toml::Value::as_table_mut)
            {
                first.insert("starts_at".into(), stamp.into());
            }
        }
        toml::to_string(&table).unwrap_or_default()
    }
}

impl Scenario {
    /// The gateway config text for this run and its validated form; the error is
    /// flashgate's own, naming the key.
    pub fn gateway_settings(
        &self,
        owned: &Owned,
        opens_at: Option<SystemTime>,
    ) -> Result<(String, flashgate::config::Config), String> {
        let text = self.gateway_config(owned, opens_at);
        flashgate::config::Config::from_toml(&text, "scenario [gateway]", &[])
            .map(|config| (text, config))
            .map_err(|e| format!("the scenario's gateway config: {e}"))
    }
}

/// The secret a run's gateway signs deliveries with and its demo backend verifies.
pub fn signing_secret(admin_token: &str) -> String {
    format!("deliveries-{admin_token}")
}

/// The parts of the gateway's config the load test decides.
#[derive(Debug, Clone)]
pub struct Owned {
    /// Public listener.
    pub listen: std::net::SocketAddr,
    /// Admin listener.
    pub admin_listen: std::net::SocketAddr,
    /// The demo backend.
    pub backend: std::net::SocketAddr,
    /// Bearer token of the admin API.
    pub admin_token: String,
    /// The store, when shared (Redis or a Redis Cluster).
    pub store: Option<SharedStore>,
}

/// Where a shared store is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedStore {
    /// One redis-server: its URL.
    Redis(String),
    /// A Redis Cluster: its nodes' URLs (the gateway's seed nodes).
    Cluster(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "name = \"t\"\n[crowd]\nusers = 10\n[[gateway.sale]]\nsku = \"a\"\nstock = 1\n";

    #[test]
    fn a_minimal_scenario_takes_the_defaults() {
        let s = Scenario::parse(MINIMAL).expect("parses");
        assert_eq!(s.store, StoreChoice::Memory);
        assert_eq!(s.crowd.clicks, 1);
        assert_eq!(s.crowd.connections, 256);
        assert!(s.events.is_empty());
        let empty = Scenario::parse(&format!("{MINIMAL}[expect]\n")).expect("parses");
        assert_eq!(
            s.expect.settle, empty.expect.settle,
            "no [expect] is an empty one"
        );
        assert_eq!(s.expect.settle, Duration::from_secs(120));
    }

    #[test]
    fn errors_name_the_key() {
        let bad = MINIMAL.replace("users = 10", "users = 10\nclick = 2");
        let e = Scenario::parse(&bad).expect_err("unknown key");
        assert!(e.contains("crowd"), "{e}");
        let e =
            Scenario::parse("name = \"t\"\n[crowd]\nusers = 1\n[gateway]\n").expect_err("no sale");
        assert!(e.contains("gateway.sale"), "{e}");
        let redis_event = format!(
            "{MINIMAL}[[event]]\nat = \"1s\"\naction = \"restart_redis\"\ndown_for = \"1s\"\n"
        );
        let e = Scenario::parse(&redis_event).expect_err("memory store");
        assert!(e.contains("restart_redis"), "{e}");
        let ok = format!("store = \"redis\"\n{redis_event}");
        assert!(Scenario::parse(&ok).is_ok(), "a well-formed event parses");
        let typo = format!("{ok}down_fr = \"1s\"\n");
        let e = Scenario::parse(&typo).expect_err("misspelt key");
        assert!(e.contains("down_fr"), "{e}");
    }

    #[test]
    fn the_owned_keys_are_filled_in_and_the_rest_kept() {
        let s = Scenario::parse(&format!("{MINIMAL}[gateway.queue]\ndrain_rate = 7\n"))
            .expect("parses");
        let owned = Owned {
            listen: "127.0.0.1:1".parse().expect("addr"),
            admin_listen: "127.0.0.1:2".parse().expect("addr"),
            backend: "127.0.0.1:3".parse().expect("addr"),
            admin_token: "secret".into(),
            store: Some(SharedStore::Redis("redis://127.0.0.1:4".into())),
        };
        let text = s.gateway_config(&owned, Some(SystemTime::UNIX_EPOCH));
        let c = flashgate::config::Config::from_toml(&text, "test", &[]).expect("valid config");
        assert_eq!(c.server.listen, owned.listen);
        assert_eq!(c.queue.drain_rate, flashgate::config::DrainRate::Fixed(7));
        assert_eq!(c.upstream.url, "http://127.0.0.1:3");
        assert_eq!(c.admin.token, "secret");
        assert_eq!(c.store.url, "redis://127.0.0.1:4");
        assert!(c.sales[0].starts_at.is_some());
        let seeds = vec!["redis://127.0.0.1:5".into(), "redis://127.0.0.1:6".into()];
        let owned = Owned {
            store: Some(SharedStore::Cluster(seeds.clone())),
            ..owned
        };
        let text = s.gateway_config(&owned, None);
        let c = flashgate::config::Config::from_toml(&text, "test", &[]).expect("valid config");
        assert_eq!(c.store.kind, flashgate::config::StoreKind::RedisCluster);
        assert_eq!(c.store.urls, seeds);
        assert!(
            c.cluster.secret.len() >= 16,
            "a shared store needs the secret"
        );
    }

    #[test]
    fn a_cluster_run_takes_instances_but_not_chaos() {
        let two = format!("store = \"redis-cluster\"\ninstances = 2\n{MINIMAL}");
        let s = Scenario::parse(&two).expect("parses");
        assert_eq!(s.store, StoreChoice::RedisCluster);
        let e = Scenario::parse(&MINIMAL.replace("name", "instances = 2\nname"))
            .expect_err("memory store");
        assert!(e.contains("instances"), "{e}");
        let chaos =
            format!("{two}[chaos]\nfaults = 1\nwindow = \"1s\"\nkinds = [\"backend_errors\"]\n");
        let e = Scenario::parse(&chaos).expect_err("chaos on a cluster");
        assert!(e.contains("redis-cluster"), "{e}");
    }

    #[test]
    fn waves_name_a_sale_the_run_has_and_their_own_users() {
        let s = Scenario::parse(MINIMAL).expect("parses");
        let one = s.waves();
        assert_eq!((one.len(), one[0].sku.as_str(), one[0].users), (1, "a", 10));
        let waves = "name = \"t\"\n[crowd]\n\
            [[wave]]\nsku = \"a\"\nusers = 3\n\
            [[wave]]\nsku = \"b\"\nusers = 4\nfrom = \"2s\"\n\
            [[event]]\nat = \"1s\"\naction = \"put_sale\"\nsale = { sku = \"b\", stock = 5 }\n\
            [[gateway.sale]]\nsku = \"a\"\nstock = 1\n";
        let s = Scenario::parse(waves).expect("parses");
        assert_eq!(s.users(), 7);
        let late = waves.replace("at = \"1s\"", "at = \"3s\"");
        let e = Scenario::parse(&late).expect_err("put after its wave came");
        assert!(e.contains("wave.sku"), "{e}");
        let twice = waves.replace("sku = \"b\"\nusers", "sku = \"a\"\nusers");
        let e = Scenario::parse(&twice).expect_err("two waves for one sale");
        assert!(e.contains("two waves"), "{e}");
        let far = waves.replace("action = \"put_sale\"", "action = \"put_sale\"\nvia = 1");
        let e = Scenario::parse(&far).expect_err("one instance");
        assert!(e.contains("event.via"), "{e}");
    }

    #[test]
    fn the_drain_expectations_are_bounded() {
        let ok = format!("{MINIMAL}[expect]\ndrain_tolerance = 0.05\nburst_limit = 1.1\n");
        let s = Scenario::parse(&ok).expect("parses");
        assert_eq!(s.expect.drain_tolerance, Some(0.05));
        assert_eq!(s.expect.burst_limit, Some(1.1));
        let e = Scenario::parse(&ok.replace("0.05", "0")).expect_err("no tolerance");
        assert!(e.contains("drain_tolerance"), "{e}");
        let e = Scenario::parse(&ok.replace("1.1", "0.9")).expect_err("below the rate");
        assert!(e.contains("burst_limit"), "{e}");
    }
}
