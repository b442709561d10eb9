//! How the Redis store reaches Redis: a pool of multiplexed connections to one server, or
//! one cluster connection that knows the slot map and follows MOVED and ASK redirections.
//! Either way a call takes a [`Conn`], and a call that finds the link broken drops it, so
//! the next call connects afresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use deadpool_redis::{Config as PoolConfig, Pool, Runtime};
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

/// The way to Redis.
pub(super) enum Link {
    /// deadpool opens and health-checks the connections; calls then go over clones of
    /// those multiplexed connections, round-robin, so concurrent calls pipeline on each
    /// connection instead of each taking a connection (and a health-check PING).
    Single {
        pool: Pool,
        size: usize,
        live: RwLock<Arc<Vec<MultiplexedConnection>>>,
        next: AtomicUsize,
    },
    /// One cluster connection (itself multiplexed, one connection per node).
    Cluster {
        // Boxed: the client is much larger than the single server's pool handle.
        client: Box<ClusterClient>,
        live: RwLock<Option<ClusterConnection>>,
        timeout: Duration,
    },
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Link {
    /// The link `cfg` names; nothing is contacted yet.
    pub(super) fn new(cfg: &StoreConfig) -> Result<Self, StoreError> {
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
            return Ok(Self::Cluster {
                client: Box::new(client),
                live: RwLock::new(None),
                timeout: cfg.timeout,
            });
        }
        let mut pc = PoolConfig::from_url(cfg.url.clone());
        let mut pool_cfg = deadpool_redis::PoolConfig::new(cfg.pool_size);
        // A dead Redis must not make callers wait forever for a connection.
        pool_cfg.timeouts.wait = Some(cfg.timeout);
        pool_cfg.timeouts.create = Some(cfg.timeout);
        pool_cfg.timeouts.recycle = Some(cfg.timeout);
        pc.pool = Some(pool_cfg);
        let pool = pc
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| unavailable(format!("{}: {e}", redact_url(&cfg.url))))?;
        Ok(Self::Single {
            pool,
            size: cfg.pool_size,
            live: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
        })
    }

    /// A connection to send one call on.
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        match self {
            Self::Single {
                pool,
                size,
                live,
                next,
            } => {
                let cached = live.read().unwrap_or_else(PoisonError::into_inner).clone();
                if !cached.is_empty() {
                    let i = next.fetch_add(1, Ordering::Relaxed) % cached.len();
                    return Ok(Conn::Single(cached[i].clone()));
                }
                // Take every pooled connection at once (so they are distinct), keep clones.
                let mut taken = Vec::with_capacity(*size);
                for _ in 0..*size {
                    taken.push(pool.get().await.map_err(unavailable)?);
                }
                let fresh: Vec<MultiplexedConnection> =
                    taken.iter().map(|c| (**c).clone()).collect();
                let first = fresh[0].clone();
                *live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
                Ok(Conn::Single(first))
            }
            Self::Cluster {
                client,
                live,
                timeout,
            } => {
                if let Some(c) = live.read().unwrap_or_else(PoisonError::into_inner).clone() {
                    return Ok(Conn::Cluster(c));
                }
                let c = tokio::time::timeout(*timeout, client.get_async_connection())
                    .await
                    .map_err(|_| unavailable("the cluster did not answer in time"))?
                    .map_err(unavailable)?;
                *live.write().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                Ok(Conn::Cluster(c))
            }
        }
    }

    /// Drops the cached connections: the next call connects afresh.
    pub(super) fn forget(&self) {
        match self {
            Self::Single { live, .. } => {
                *live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Vec::new());
            }
            Self::Cluster { live, .. } => {
                *live.write().unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
    }
}
