//! Opening the store the config names, behind its breaker: the one place it is built, for
//! the gateway and for `flashgate stock`.

use std::path::PathBuf;
use std::sync::Arc;

use super::StartError;
use crate::config::{StoreConfig, StoreKind};
use crate::local_state::LocalState;
use crate::metrics::Metrics;
use crate::store::{GuardedStore, MemoryStore, RedisStore, Store};

/// The store as opened.
pub struct OpenedStore {
    /// Every call goes through this: bounded by `store.timeout`, behind the breaker.
    pub store: Arc<dyn Store>,
    /// The memory store itself, when it is the store: what it still holds at the end of a
    /// graceful stop is written to the local state directory.
    pub memory: Option<Arc<MemoryStore>>,
    /// The snapshot the memory store was restored from; removed once the gateway runs.
    pub restored: Option<PathBuf>,
}

/// Opens the store `cfg` names (contacting nothing yet), restoring the memory store from
/// `local`'s snapshot if the last stop left one; `metrics` records the breaker's state.
pub fn open(
    cfg: &StoreConfig,
    local: &LocalState,
    metrics: Option<Arc<Metrics>>,
) -> Result<OpenedStore, StartError> {
    let mut memory = None;
    let mut restored = None;
    let backend: Arc<dyn Store> = match cfg.kind {
        StoreKind::Memory => {
            let m = Arc::new(MemoryStore::with_replay_ttl(cfg.replay_ttl));
            if let Some(path) = local.snapshot_path() {
                if m.restore(&path)? {
                    restored = Some(path);
                }
            }
            memory = Some(m.clone());
            m
        }
        StoreKind::Redis | StoreKind::RedisCluster => {
            Arc::new(RedisStore::new(cfg, cfg.replay_ttl)?)
        }
    };
    let breaker = GuardedStore::new(
        backend,
        cfg.timeout,
        cfg.breaker_threshold,
        cfg.breaker_cooldown,
    );
    let breaker = match metrics {
        Some(m) => breaker.with_metrics(m),
        None => breaker,
    };
    Ok(OpenedStore {
        store: Arc::new(breaker),
        memory,
        restored,
    })
}
