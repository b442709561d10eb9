//! This instance among those sharing the store: it announces itself (id, internal address)
//! every `cluster.heartbeat`, and the store forgets an instance whose announcement has not
//! been renewed for `cluster.member_ttl`. What the other instances are is read from there.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::store::{Member, Store, StoreError};
use crate::types::{OrderId, OwnerTag};

/// This instance's membership in the store's list of instances.
pub struct Membership {
    me: Member,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    heartbeat: Duration,
    ttl: Duration,
    /// The live instances as the last announcement found them, and when.
    view: RwLock<Option<(Instant, Vec<Member>)>>,
    /// Held while the view is read afresh for a lookup ([`Membership::locate`]).
    refreshing: tokio::sync::Mutex<()>,
}

/// Where the instance that issued a ticket is, as far as this one knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whereabouts {
    /// Announced: reachable at its address.
    Live(Member),
    /// Not among the live instances of a view younger than `member_ttl`: it stopped.
    Gone,
    /// This instance has no recent view of the others (it cannot reach the store).
    Unknown,
}

impl Membership {
    /// This instance as `cfg` names it, reachable at `advertise` (used when
    /// `cluster.advertise` is empty), announced in `store` as incarnation `owner` (what
    /// its ticket ids start with).
    pub fn new(
        cfg: &ClusterConfig,
        advertise: std::net::SocketAddr,
        owner: OwnerTag,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let id = match cfg.instance_id.as_str() {
            "" => format!(
                "{}-{}",
                std::process::id(),
                &OrderId::random().as_str()[..8]
            ),
            id => id.to_owned(),
        };
        let address = match cfg.advertise.as_str() {
            "" => advertise.to_string(),
            given => given.to_owned(),
        };
        Self {
            me: Member {
                id,
                address,
                incarnation: owner.as_str().to_owned(),
            },
            store,
            metrics,
            heartbeat: cfg.heartbeat,
            ttl: cfg.member_ttl,
            view: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// This instance.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// How often this instance announces itself.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// How long an instance may go without announcing itself before it counts as gone.
    pub fn member_ttl(&self) -> Duration {
        self.ttl
    }

    /// The deliverers of the live instances, if this instance's view of them is younger
    /// than `member_ttl`. An older view could miss an instance started since (and its
    /// orders would be taken from it): with none, nothing is taken over.
    pub fn live_consumers(&self) -> Option<Vec<String>> {
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        view.as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, live)| live.iter().map(Member::consumer).collect())
    }

    /// Where the instance of incarnation `owner` is.
    pub fn whereabouts(&self, owner: &OwnerTag) -> Whereabouts {
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        let Some((at, live)) = view.as_ref() else {
            return Whereabouts::Unknown;
        };
        match live.iter().find(|m| m.incarnation == owner.as_str()) {
            // Even a stale view's address is worth a try.
            Some(m) => Whereabouts::Live(m.clone()),
            None if at.elapsed() < self.ttl => Whereabouts::Gone,
            None => Whereabouts::Unknown,
        }
    }

    /// Where the instance of incarnation `owner` is, like [`whereabouts`](Self::whereabouts),
    /// except that an owner the view does not list, or a view not read yet (before the
    /// first heartbeat) or too old, is looked up in the store's list read afresh: an
    /// instance started since the last heartbeat is not gone, and one gone is known gone.
    /// Lookups that wait meanwhile share that one read.
    pub async fn locate(&self, owner: &OwnerTag) -> Whereabouts {
        let asked = Instant::now();
        if let live @ Whereabouts::Live(_) = self.whereabouts(owner) {
            return live;
        }
        let _one = self.refreshing.lock().await;
        let fresh = |view: &Option<(Instant, Vec<Member>)>| {
            view.as_ref().is_some_and(|(at, _)| *at >= asked)
        };
        if !fresh(&self.view.read().unwrap_or_else(PoisonError::into_inner)) {
            let reading = Instant::now();
            if let Ok(live) = self.store.members().await {
                *self.view.write().unwrap_or_else(PoisonError::into_inner) = Some((reading, live));
            }
        }
        self.whereabouts(owner)
    }

    /// The live instances, as the store has them now.
    pub async fn members(&self) -> Result<Vec<Member>, StoreError> {
        let live = self.store.members().await?;
        self.metrics.instances.set(live.len() as i64);
        Ok(live)
    }

    /// Announces this instance every heartbeat until `shutdown`, then leaves the list.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            let asked = Instant::now();
            match self.store.announce(&self.me, self.ttl).await {
                Ok(live) => {
                    // Dated when asked: the store's list is at least that fresh.
                    *self.view.write().unwrap_or_else(PoisonError::into_inner) =
                        Some((asked, live.clone()));
                    if !announced {
                        tracing::info!(id = %self.me.id, address = %self.me.address,
                            instances = live.len(), "announced in the store");
                        announced = true;
                    }
                    self.metrics.instances.set(live.len() as i64);
                }
                Err(StoreError::Rejected(why)) => {
                    // Two processes with one id: this one stays out of the list (it would
                    // take over the other's entry) and says so at every heartbeat.
                    tracing::error!(id = %self.me.id, %why,
                        "cannot announce this instance: give each instance its own cluster.instance_id");
                }
                // The breaker logs the store's trouble; the next heartbeat tries again.
                Err(e) => tracing::debug!(error = %e, "cannot announce this instance"),
            }
        }
        if let Err(e) = self.store.leave(&self.me).await {
            tracing::debug!(error = %e, "cannot leave the store's list of instances");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    /// Flake of `stale_holds` under load: an owner asked about before this instance's first
    /// heartbeat read the list was "unknown" (not asked of the store), so a gone instance's
    /// hold was taken for a live one's and its dead ticket joined.
    #[tokio::test]
    async fn an_owner_asked_about_before_the_first_heartbeat_is_looked_up() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let m = Membership::new(
            &ClusterConfig::default(),
            "127.0.0.1:1".parse().expect("addr"),
            OwnerTag::random(),
            store,
            Arc::new(Metrics::new()),
        );
        assert!(matches!(
            m.locate(&OwnerTag::random()).await,
            Whereabouts::Gone
        ));
    }
}
