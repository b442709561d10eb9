//! How the Redis store reaches Redis: a pool of multiplexed connections to one server, or
//! one cluster connection that knows the slot map and follows MOVED and ASK redirections.
//! Either way a call takes a [`Conn`]. A call that finds the connections broken or silent
//! drops them (see [`Link::failed`]), and the next call connects afresh: one refill at a
//! time, whoever asks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use deadpool_redis::{Pool, Runtime};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::super::StoreError;
use crate::config::{redact_url, StoreConfig, StoreKind};

/// One connection to send calls on (cheap to clone: calls share it).
#[derive(Clone)]
pub(super) enum Conn {
    /// To the one server.
    Single(MultiplexedConnection),
    /// To the cluster: each call goes to the master of its keys' slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The way to Redis, and the one refill of its connections under way.
pub(super) struct Link {
    way: Way,
    /// Held by the task refilling the connections. Calls that find none wait for it
    /// rather than each connecting: each taking pooled connections for itself, a crowd
    /// of calls held a few each and waited for the rest until the pool gave up, again and
    /// again (the gateway never reconnected after a Redis restart under load). The refill
    /// is a task of its own: a caller that gives up does not undo the connections made.
    refill: Arc<tokio::sync::Mutex<()>>,
    /// When a call last got an answer, in ms since `epoch`: connections that answer some
    /// calls are not the trouble when one call goes unanswered (see [`keeps_connections`]).
    answered_ms: AtomicU64,
    epoch: Instant,
    /// How long a call may take.
    timeout: Duration,
}

enum Way {
    /// deadpool opens and health-checks the connections; calls then go over clones of
    /// those multiplexed connections, round-robin, so concurrent calls pipeline on each
    /// connection instead of each taking a connection (and a health-check PING).
    Single {
        pool: Pool,
        size: usize,
        live: Arc<RwLock<Arc<Vec<MultiplexedConnection>>>>,
        next: AtomicUsize,
    },
    /// One cluster connection (itself multiplexed, one connection per node).
    Cluster {
        client: Arc<ClusterClient>,
        live: Arc<RwLock<Option<ClusterConnection>>>,
        timeout: Duration,
    },
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Link {
    /// The link `cfg` names; nothing is contacted yet.
    pub(super) fn new(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let refill = Arc::new(tokio::sync::Mutex::new(()));
        // rediss:// connections use rustls with the ring provider; installing it twice is a
        // no-op that reports an error we can ignore.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if cfg.kind == StoreKind::RedisCluster {
            let client = ClusterClientBuilder::new(cfg.urls.clone())
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .build()
                .map_err(|e| {
                    let seeds: Vec<String> = cfg.urls.iter().map(|u| redact_url(u)).collect();
                    unavailable(format!("{}: {e}", seeds.join(",")))
                })?;
            let way = Way::Cluster {
                client: Arc::new(client),
                live: Arc::new(RwLock::new(None)),
                timeout: cfg.timeout,
            };
            return Ok(Self::with(way, refill, cfg.timeout));
        }
        let mut pool_cfg = deadpool_redis::PoolConfig::new(cfg.pool_size);
        // A dead Redis must not make callers wait forever for a connection. Opening one is
        // the refill's business, a task of its own that no caller waits on for longer than
        // its own bound: it gets four times the store timeout, as the cluster's does, so
        // that a gateway starved of CPU under a crowd still gets its connections back.
        pool_cfg.timeouts.wait = Some(cfg.timeout);
        pool_cfg.timeouts.create = Some(cfg.timeout * 4);
        pool_cfg.timeouts.recycle = Some(cfg.timeout * 4);
        // The connection's own response timeout is redis' default (500 ms) unless set: a
        // store timeout above it would not be honoured (a call answered in 0.6 s under a
        // 5 s timeout failed). Calls are bounded by the store timeout already.
        let connection = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(cfg.timeout))
            .set_connection_timeout(Some(cfg.timeout * 4));
        let bad_url =
            |e: &dyn std::fmt::Display| unavailable(format!("{}: {e}", redact_url(&cfg.url)));
        let manager = deadpool_redis::Manager::new_with_config(cfg.url.as_str(), connection)
            .map_err(|e| bad_url(&e))?;
        let pool = Pool::builder(manager)
            .config(pool_cfg)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| bad_url(&e))?;
        let way = Way::Single {
            pool,
            size: cfg.pool_size,
            live: Arc::new(RwLock::new(Arc::new(Vec::new()))),
            next: AtomicUsize::new(0),
        };
        Ok(Self::with(way, refill, cfg.timeout))
    }

    fn with(way: Way, refill: Arc<tokio::sync::Mutex<()>>, timeout: Duration) -> Self {
        Self {
            way,
            refill,
            answered_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            timeout,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A call got an answer (see [`Link::failed`]).
    pub(super) fn answered(&self) {
        self.answered_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A connection to send one call on: a cached one, else one of those the refill
    /// under way (started here if none is) makes.
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let one = self.refill.clone().lock_owned().await;
        // Refilled while this call waited.
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let refill = match &self.way {
            Way::Single {
                pool, size, live, ..
            } => tokio::spawn(fill_single(pool.clone(), *size, live.clone(), one)),
            Way::Cluster {
                client,
                live,
                timeout,
            } => tokio::spawn(fill_cluster(client.clone(), live.clone(), *timeout, one)),
        };
        refill.await.map_err(unavailable)??;
        self.cached()
            .ok_or_else(|| unavailable("the new connections were dropped at once"))
    }

    /// A cached connection, if there is one.
    fn cached(&self) -> Option<Conn> {
        match &self.way {
            Way::Single { live, next, .. } => {
                let cached = live.read().unwrap_or_else(PoisonError::into_inner).clone();
                if cached.is_empty() {
                    return None;
                }
                let i = next.fetch_add(1, Ordering::Relaxed) % cached.len();
                Some(Conn::Single(cached[i].clone()))
            }
            Way::Cluster { live, .. } => live
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .map(Conn::Cluster),
        }
    }

    /// A call failed `how`: drops the cached connections where that calls for it, so the
    /// next call connects afresh.
    pub(super) fn failed(&self, how: Failure) {
        let since_answer = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.answered_ms.load(Ordering::Relaxed)),
        );
        if keeps_connections(how, since_answer, self.timeout) {
            return;
        }
        match &self.way {
            Way::Single { live, .. } => {
                *live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Vec::new());
            }
            Way::Cluster { live, .. } => {
                *live.write().unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
    }
}

/// Whether a call that failed `how`, `since_answer` after some call last got an answer,
/// leaves the connections as they are. A silent call while others get answers is that
/// call's trouble, not the connections': one paused cluster master (dropping the cluster
/// connection meant connecting to every node again, the silent one too, so every sale
/// stopped), or a gateway starved of CPU under a crowd (dropping every connection at each
/// slow call made every call wait for a refill, which timed out in turn: after a Redis
/// restart under load the gateway answered store_unavailable for the rest of the sale).
/// Silent for every call, or broken, they are dropped.
fn keeps_connections(how: Failure, since_answer: Duration, timeout: Duration) -> bool {
    how == Failure::Silent && since_answer < timeout
}

/// How a call to Redis failed, as far as the connections are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// No answer in time.
    Silent,
    /// The connection broke (reset, closed, an I/O error), or redis-rs says it cannot be
    /// used again.
    Broken,
}

/// Takes every pooled connection at once (so they are distinct, and opened side by side)
/// and caches clones of those it got; `_one` is the refill's turn, given back when it ends.
async fn fill_single(
    pool: Pool,
    size: usize,
    live: Arc<RwLock<Arc<Vec<MultiplexedConnection>>>>,
    _one: tokio::sync::OwnedMutexGuard<()>,
) -> Result<(), StoreError> {
    let mut gets = tokio::task::JoinSet::new();
    for _ in 0..size {
        let pool = pool.clone();
        gets.spawn(async move { pool.get().await });
    }
    // As many as Redis gives: one at its client limit (maxclients) may refuse a few, and
    // the calls go on over the others rather than not at all.
    let (mut taken, mut refused) = (Vec::with_capacity(size), None);
    while let Some(got) = gets.join_next().await {
        match got
            .map_err(unavailable)
            .and_then(|g| g.map_err(unavailable))
        {
            Ok(c) => taken.push(c),
            Err(e) => refused = Some(e),
        }
    }
    if taken.is_empty() {
        return Err(refused.unwrap_or_else(|| unavailable("a pool of no connections")));
    }
    let fresh: Vec<MultiplexedConnection> = taken.iter().map(|c| (**c).clone()).collect();
    *live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
    Ok(())
}

/// Opens the cluster connection and caches it; `_one` as for [`fill_single`].
async fn fill_cluster(
    client: Arc<ClusterClient>,
    live: Arc<RwLock<Option<ClusterConnection>>>,
    timeout: Duration,
    _one: tokio::sync::OwnedMutexGuard<()>,
) -> Result<(), StoreError> {
    // Opening it connects to every node, each within `timeout`: one silent node must not
    // use up the whole allowance (the others' sales would get no connection at all).
    let c = tokio::time::timeout(timeout * 4, client.get_async_connection())
        .await
        .map_err(|_| unavailable("the cluster did not answer in time"))?
        .map_err(unavailable)?;
    *live.write().unwrap_or_else(PoisonError::into_inner) = Some(c);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_silence_while_others_are_answered_keeps_the_connections() {
        let t = Duration::from_millis(200);
        let ms = Duration::from_millis;
        assert!(keeps_connections(Failure::Silent, ms(50), t));
        assert!(!keeps_connections(Failure::Silent, ms(200), t));
        assert!(!keeps_connections(Failure::Silent, ms(5_000), t));
        assert!(!keeps_connections(Failure::Broken, ms(0), t));
    }
}
