//! What a scenario runs against, started for the run and stopped after it: the demo backend
//! (in this process), a redis-server or a three-master Redis Cluster when the scenario wants
//! one, and one or more instances of the flashgate binary. With a chaos schedule (one
//! redis-server only), each instance reaches Redis and the backend through fault proxies of
//! its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use flashgate_support::{RedisCluster, RedisOptions, RedisServer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::client::Side;
use crate::fault_proxy::FaultProxy;
use crate::scenario::{Owned, Scenario, SharedStore, StoreChoice};

/// Masters of the cluster a `store = "redis-cluster"` run starts.
const CLUSTER_MASTERS: usize = 3;

/// Bound on every start-up wait and every side request.
const STARTUP: Duration = Duration::from_secs(30);
const SIDE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to find the programs a run starts.
#[derive(Clone)]
pub struct Programs {
    /// The flashgate binary.
    pub flashgate: PathBuf,
    /// redis-server.
    pub redis_server: PathBuf,
}

/// A child process that is killed when dropped.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `redis` (again) off the runtime's threads: it waits for the first PING.
async fn start_redis(redis: &Arc<RedisServer>) -> Result<(), String> {
    let r = redis.clone();
    tokio::task::spawn_blocking(move || r.start())
        .await
        .map_err(|e| format!("redis-server start: {e}"))?
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(())
        .ok_or_else(|| format!("kill {sig} {pid} failed"))
}

/// One gateway instance of the run.
pub struct Instance {
    /// Its public address.
    pub public: SocketAddr,
    /// Its admin address.
    pub admin: SocketAddr,
    /// Its scratch directory (config, log, data directory).
    dir: PathBuf,
    child: Mutex<Option<Guarded>>,
    /// Its link to Redis, when the run injects faults.
    pub redis_link: Option<FaultProxy>,
    /// Its link to the backend, when the run injects faults.
    pub backend_link: Option<FaultProxy>,
}

/// Everything the scenario runs against.
pub struct Stack {
    /// The run's scratch directory (config, logs, Redis data).
    pub dir: PathBuf,
    /// The gateway's public address.
    pub public: SocketAddr,
    /// The gateway's admin address.
    pub admin: SocketAddr,
    /// The demo backend's address.
    pub backend: SocketAddr,
    /// Bearer token of the admin API.
    pub admin_token: String,
    /// The gateway's effective config (instance 0's; the others differ in addresses only).
    pub config: flashgate::config::Config,
    /// Every gateway instance; the first is `public`/`admin`.
    pub instances: Vec<Instance>,
    /// The demo backend (its faults are switched live).
    pub demo: flashgate::demo::DemoBackend,
    programs: Programs,
    redis: Option<Arc<RedisServer>>,
    /// The run's Redis Cluster, when it has one.
    cluster: Option<Arc<RedisCluster>>,
    /// A client of the run's Redis (or cluster), to read stock as the store has it.
    store: Option<flashgate::store::RedisStore>,
    /// The client for the admin API and the backend.
    side: Side,
    backend_stop: CancellationToken,
}

impl Stack {
    /// Starts the backend, Redis when asked for, and the gateways; returns once they are
    /// ready.
    pub async fn start(
        scenario: &Scenario,
        programs: &Programs,
        opens_at: Option<SystemTime>,
    ) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "flashgate-loadtest-{}-{}",
            std::process::id(),
            flashgate::types::OrderId::random()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let backend_stop = CancellationToken::new();
        let admin_token = flashgate::types::OrderId::random().to_string();
        // The backend takes only signed deliveries, as a production one should.
        let mut demo = flashgate::demo::DemoBackend::with_delay(scenario.backend.delay).verifying(
            &crate::scenario::signing_secret(&admin_token),
            Duration::from_secs(300),
        );
        if let Some(workers) = scenario.backend.workers {
            demo = demo.with_capacity(workers, scenario.backend.queue);
        }
        let (backend, demo, _) = flashgate::demo::serve_backend(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            demo,
            backend_stop.clone(),
        )
        .await
        .map_err(|e| format!("cannot start the demo backend: {e}"))?;
        let redis = match scenario.store {
            StoreChoice::Memory | StoreChoice::RedisCluster => None,
            StoreChoice::Redis => {
                // As with the gateway's ports: a port taken meanwhile means another try.
                let mut started = Err(String::new());
                for _ in 0..3 {
                    // Its data on disk (append-only, fsync always), so a restart keeps every
                    // acknowledged write.
                    let redis = RedisServer::new(RedisOptions {
                        program: programs.redis_server.clone(),
                        dir: dir.join("redis"),
                        persistent: true,
                        tls: None,
                        log: Some(dir.join("redis.log")),
                        cluster: false,
                    })
                    .map(Arc::new)
                    .map_err(|e| format!("redis-server: {e}"))?;
                    started = start_redis(&redis).await.map(|()| redis);
                    if started.is_ok() {
                        break;
                    }
                }
                Some(started?)
            }
        };
        let cluster = match scenario.store {
            StoreChoice::RedisCluster => Some(start_cluster(&programs.redis_server).await?),
            StoreChoice::Memory | StoreChoice::Redis => None,
        };
        let redis_addr = redis
            .as_ref()
            .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port())));
        let side = Side::new(SIDE_TIMEOUT);
        let faulty = scenario.chaos.is_some();
        let mut instances = Vec::with_capacity(scenario.instances);
        let mut config = None;
        for k in 0..scenario.instances {
            let gw_dir = dir.join(format!("gateway-{k}"));
            std::fs::create_dir_all(&gw_dir).map_err(|e| format!("{}: {e}", gw_dir.display()))?;
            let link = |target: SocketAddr| {
                let stop = backend_stop.clone();
                async move {
                    match faulty {
                        true => FaultProxy::start(target, stop).await.map(Some),
                        false => Ok(None),
                    }
                }
            };
            let redis_link = match redis_addr {
                Some(a) => link(a).await?,
                None => None,
            };
            let backend_link = link(backend).await?;
            // A cluster run has no fault links (the scenario refuses chaos with one).
            let store = match (&redis_link, redis_addr, &cluster) {
                (Some(p), _, _) => Some(SharedStore::Redis(format!("redis://{}", p.addr))),
                (None, Some(a), _) => Some(SharedStore::Redis(format!("redis://{a}"))),
                (None, None, Some(c)) => Some(SharedStore::Cluster(c.urls())),
                (None, None, None) => None,
            };
            let via = backend_link.as_ref().map_or(backend, |p| p.addr);
            let (instance, cfg) = start_instance(
                &gw_dir,
                scenario,
                programs,
                opens_at,
                (via, store, admin_token.clone()),
                &side,
            )
            .await?;
            config.get_or_insert(cfg);
            instances.push(Instance {
                redis_link,
                backend_link,
                ..instance
            });
        }
        let config = config.ok_or("a run needs at least one instance")?;
        // The checks read the store directly, never through a faulty link; a cluster's
        // config already names its nodes themselves.
        let store = match (redis_addr, &cluster) {
            (Some(a), _) => {
                let mut c = config.store.clone();
                c.url = format!("redis://{a}");
                Some(c)
            }
            (None, Some(_)) => Some(config.store.clone()),
            (None, None) => None,
        };
        let store = store
            .map(|c| flashgate::store::RedisStore::new(&c, c.replay_ttl))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            dir,
            public: instances[0].public,
            admin: instances[0].admin,
            backend,
            admin_token,
            config,
            instances,
            demo,
            programs: programs.clone(),
            redis,
            cluster,
            store,
            side,
            backend_stop,
        })
    }

    /// SIGKILLs Redis, keeps it down for `down_for`, starts it again on the same data.
    pub async fn restart_redis(&self, down_for: Duration) -> Result<(), String> {
        let Some(redis) = &self.redis else {
            return Err("no redis-server in this run".into());
        };
        redis.kill();
        tokio::time::sleep(down_for).await;
        start_redis(redis).await
    }

    /// SIGSTOPs Redis for `paused_for`, then lets it go on.
    pub async fn pause_redis(&self, paused_for: Duration) -> Result<(), String> {
        let Some(redis) = &self.redis else {
            return Err("no redis-server in this run".into());
        };
        redis.signal("-STOP")?;
        tokio::time::sleep(paused_for).await;
        redis.signal("-CONT")
    }

    /// SIGKILLs gateway instance `k`, keeps it down for `down_for`, starts it again on the
    /// same config (and data directory) and waits until it is ready.
    pub async fn restart_gateway(&self, k: usize, down_for: Duration) -> Result<(), String> {
        let inst = self.instances.get(k).ok_or("no such instance")?;
        let old = inst.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
        tokio::time::sleep(down_for).await;
        let child = spawn_gateway(&inst.dir, &self.programs)?;
        *inst.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let ready = format!("http://{}/readyz", inst.admin);
        wait_for(
            || async { self.side.text(&ready, None).await.is_ok() },
            "a restarted gateway to be ready",
        )
        .await
    }

    /// The Prometheus text of every instance.
    pub async fn all_metrics(&self) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        for inst in &self.instances {
            let url = format!("http://{}/metrics", inst.admin);
            out.push(self.side.text(&url, Some(&self.admin_token)).await);
        }
        out
    }

    /// Entries still pending in the deliverers' group of `sku`'s outbox (none once every
    /// order is settled).
    pub async fn pending_deliveries(&self, sku: &str) -> Result<u64, String> {
        let url = match (&self.redis, &self.cluster) {
            (Some(r), _) => r.url(),
            (None, Some(c)) => node_of_sale(c, sku).await?,
            (None, None) => return Ok(0),
        };
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let read = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            let key = format!("{}:{{{sku}}}:outbox", self.config.store.key_prefix);
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(&key)
                .arg("flashgate-deliverers")
                .query_async(&mut c)
                .await?;
            Ok::<_, redis::RedisError>(summary)
        };
        match tokio::time::timeout(SIDE_TIMEOUT, read).await {
            Ok(Ok(redis::Value::Array(items))) => match items.first() {
                Some(redis::Value::Int(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
                _ => Ok(0),
            },
            // No stream or no group: nothing was ever read, nothing is pending.
            Ok(Ok(_)) => Ok(0),
            Ok(Err(e)) if e.to_string().contains("NOGROUP") => Ok(0),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("redis did not answer XPENDING in time".into()),
        }
    }

    /// An order's state in the store (`None`: unknown or expired).
    pub async fn order_state(
        &self,
        sku: &str,
        order: &str,
    ) -> Option<flashgate::store::OrderState> {
        use flashgate::store::TokenSteps;
        let store = self.store.as_ref()?;
        let id = flashgate::types::OrderId::parse(order)?;
        let read = store.order_state(&flashgate::types::Sku::new(sku), &id);
        tokio::time::timeout(SIDE_TIMEOUT, read).await.ok()?.ok()?
    }

    /// GET on the admin API.
    pub async fn admin_get(&self, path: &str) -> Result<Value, String> {
        let url = format!("http://{}{path}", self.admin);
        self.side.json(&url, Some(&self.admin_token)).await
    }

    /// GET on instance `k`'s admin API, and its Prometheus text.
    pub async fn instance_look(&self, k: usize, path: &str) -> Result<(Value, String), String> {
        let inst = self.instances.get(k).ok_or("no such instance")?;
        let url = format!("http://{}{path}", inst.admin);
        let value = self.side.json(&url, Some(&self.admin_token)).await?;
        let url = format!("http://{}/metrics", inst.admin);
        let text = self.side.text(&url, Some(&self.admin_token)).await?;
        Ok((value, text))
    }

    /// Asks instance `k` (round the instances) to cancel order `id` through its admin API:
    /// the status and the JSON answer.
    pub async fn cancel_order(
        &self,
        k: usize,
        id: &str,
    ) -> Result<(http::StatusCode, Value), String> {
        let inst = &self.instances[k % self.instances.len()];
        let url = format!("http://{}/admin/orders/{id}/cancel", inst.admin);
        self.side.post(&url, Some(&self.admin_token)).await
    }

    /// A request to instance `k`'s admin API (round the instances): the status and the
    /// JSON answer, whatever the status.
    pub async fn admin_call(
        &self,
        k: usize,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(http::StatusCode, Value), String> {
        let inst = &self.instances[k % self.instances.len()];
        let url = format!("http://{}{path}", inst.admin);
        self.side
            .call(method, &url, Some(&self.admin_token), body, headers)
            .await
    }

    /// Rewrites instance `k`'s config file with `edit` and sends it SIGHUP, as an operator
    /// runs `systemctl reload`; returns once the instance counted the reload, with its
    /// outcome (`applied` or `refused`).
    pub async fn reload(
        &self,
        k: usize,
        edit: impl FnOnce(&mut toml::Table),
    ) -> Result<&'static str, String> {
        let inst = self.instances.get(k).ok_or("no such instance")?;
        let path = inst.dir.join("flashgate.toml");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        edit(&mut table);
        let text = toml::to_string(&table).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        let counted = |outcome: &'static str| async move {
            let url = format!("http://{}/metrics", inst.admin);
            let text = self.side.text(&url, Some(&self.admin_token)).await.ok()?;
            let label = format!("outcome=\"{outcome}\"");
            crate::sampler::metric(&text, "flashgate_config_reloads_total", &label)
        };
        let before = (counted("applied").await, counted("refused").await);
        let pid = inst
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|g| g.0.id())
            .ok_or("the instance is not running")?;
        signal(pid, "-HUP")?;
        let deadline = tokio::time::Instant::now() + STARTUP;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if counted("applied").await > before.0 {
                return Ok("applied");
            }
            if counted("refused").await > before.1 {
                return Ok("refused");
            }
        }
        Err("the instance did not count the reload in time".into())
    }

    /// GET on the demo backend.
    pub async fn backend_get(&self, path: &str) -> Result<Value, String> {
        let url = format!("http://{}{path}", self.backend);
        self.side.json(&url, None).await
    }

    /// The sale's stock as the store has it now.
    pub async fn store_stock(&self, sku: &str) -> Result<u64, String> {
        if let Some(store) = &self.store {
            use flashgate::store::StockSteps;
            let read = store.stock(&flashgate::types::Sku::new(sku));
            return tokio::time::timeout(SIDE_TIMEOUT, read)
                .await
                .map_err(|_| "the store did not answer".to_owned())?
                .map(|r| r.units)
                .map_err(|e| e.to_string());
        }
        // The memory store lives in the gateway; its admin API shows it.
        let sales = self.admin_get("/admin/sales").await?;
        sales["sales"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["sku"] == sku))
            .and_then(|s| s["remaining"].as_u64())
            .ok_or_else(|| format!("/admin/sales has no stock for {sku}"))
    }

    /// Stops the gateway (SIGTERM, so it flushes what it holds), Redis and the backend.
    pub async fn stop(&mut self) {
        // Every instance is told first, then waited for: they stop side by side.
        let mut stopping = Vec::new();
        for inst in &self.instances {
            let child = inst.child.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(g) = child else { continue };
            let _ = signal(g.0.id(), "-TERM");
            stopping.push(g);
        }
        let deadline = std::time::Instant::now() + STARTUP;
        for mut g in stopping {
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = g.0.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Some(r) = &self.redis {
            r.kill();
        }
        if let Some(c) = &self.cluster {
            for node in &c.nodes {
                node.kill();
            }
        }
        self.backend_stop.cancel();
    }

    /// Removes the scratch directory (kept when a run fails, for its logs).
    pub fn clean(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.backend_stop.cancel();
    }
}

/// Starts the run's Redis Cluster off the runtime's threads (it waits for the cluster to
/// form); as with the gateway's ports, a port taken meanwhile means another try.
async fn start_cluster(program: &Path) -> Result<Arc<RedisCluster>, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let program = program.to_path_buf();
        let started =
            tokio::task::spawn_blocking(move || RedisCluster::start(CLUSTER_MASTERS, &program))
                .await
                .map_err(|e| format!("redis cluster start: {e}"))?;
        match started {
            Ok(c) => return Ok(Arc::new(c)),
            Err(e) => last = e,
        }
    }
    Err(format!("the Redis Cluster would not start: {last}"))
}

/// The URL of the master serving `sku`'s keys: its outbox is there, and a raw command
/// (no cluster client to follow redirections) must be sent to that node.
async fn node_of_sale(cluster: &Arc<RedisCluster>, sku: &str) -> Result<String, String> {
    let c = cluster.clone();
    // Every key of a sale carries the sku as its hash tag: the sku's slot is theirs.
    let tag = sku.to_owned();
    tokio::task::spawn_blocking(move || {
        let slot = c.slot_of(&tag)?;
        Ok(c.nodes[c.node_of_slot(slot)].url())
    })
    .await
    .map_err(|e| format!("CLUSTER KEYSLOT: {e}"))?
}

/// Starts one gateway instance in `dir` on fresh ports, retrying when a chosen port was
/// taken meanwhile; returns it (without fault links) and its effective config.
async fn start_instance(
    dir: &Path,
    scenario: &Scenario,
    programs: &Programs,
    opens_at: Option<SystemTime>,
    (backend, store, admin_token): (SocketAddr, Option<SharedStore>, String),
    side: &Side,
) -> Result<(Instance, flashgate::config::Config), String> {
    let mut last = String::new();
    for _ in 0..3 {
        let owned = Owned {
            listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            backend,
            admin_token: admin_token.clone(),
            store: store.clone(),
        };
        match launch(dir, scenario, programs, opens_at, &owned, side).await {
            Ok((child, config)) => {
                let instance = Instance {
                    public: owned.listen,
                    admin: owned.admin_listen,
                    dir: dir.to_path_buf(),
                    child: Mutex::new(Some(child)),
                    redis_link: None,
                    backend_link: None,
                };
                return Ok((instance, config));
            }
            Err(Launch::PortTaken(log)) => last = log,
            Err(Launch::Failed(e)) => return Err(e),
        }
    }
    Err(format!(
        "the gateway found its ports taken three times: {last}"
    ))
}

/// Starts flashgate on the config in `dir`, logging to `dir/flashgate.log` (appended, so a
/// restarted instance keeps its earlier life's log).
fn spawn_gateway(dir: &Path, programs: &Programs) -> Result<Guarded, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("flashgate.log"))
        .map_err(|e| e.to_string())?;
    let out = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(&programs.flashgate)
        .arg("serve")
        .arg("--config")
        .arg(dir.join("flashgate.toml"))
        .stdout(out)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", programs.flashgate.display()))?;
    Ok(Guarded(child))
}

/// Starts the gateway with `owned` filled into the scenario's config and waits until it is
/// ready; returns the process and its effective config.
async fn launch(
    dir: &Path,
    scenario: &Scenario,
    programs: &Programs,
    opens_at: Option<SystemTime>,
    owned: &Owned,
    side: &Side,
) -> Result<(Guarded, flashgate::config::Config), Launch> {
    let failed = Launch::Failed;
    let (text, config) = scenario.gateway_settings(owned, opens_at).map_err(failed)?;
    std::fs::write(dir.join("flashgate.toml"), &text).map_err(|e| failed(e.to_string()))?;
    let log_path = dir.join("flashgate.log");
    let _ = std::fs::remove_file(&log_path);
    let mut child = spawn_gateway(dir, programs).map_err(failed)?;
    let ready = format!("http://{}/readyz", owned.admin_listen);
    let waited = wait_for(
        || async { side.text(&ready, None).await.is_ok() },
        "the gateway to be ready",
    )
    .await;
    let Err(e) = waited else {
        return Ok((child, config));
    };
    let exited = child.0.try_wait().ok().flatten();
    drop(child);
    let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
    if exited.is_some() && logged.contains("cannot listen") {
        return Err(Launch::PortTaken(logged));
    }
    Err(failed(format!(
        "{e}{}; its log: {}",
        exited
            .map(|s| format!(" (it exited: {s})"))
            .unwrap_or_default(),
        log_path.display()
    )))
}

/// Why a gateway launch failed.
enum Launch {
    /// A chosen port was taken before the gateway bound it: worth another try.
    PortTaken(String),
    /// Anything else.
    Failed(String),
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    flashgate_support::free_port().map_err(|e| format!("no free loopback port: {e}"))
}

/// Polls `ready` every 50 ms until it says yes, for at most STARTUP.
async fn wait_for<F, Fut>(ready: F, what: &str) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + STARTUP;
    while tokio::time::Instant::now() < deadline {
        if ready().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("timed out waiting for {what}"))
}

/// Finds a program: the given path, else on PATH, else the usual Debian location.
pub fn locate(given: Option<&Path>, name: &str, fallback: &str) -> PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(fallback))
}
