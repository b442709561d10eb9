//! A circuit breaker in front of a store: every call is bounded by the store timeout, and
//! after a run of failures calls fail at once for a cool-down instead of piling onto a dead
//! or drowning Redis. After the cool-down one call at a time probes; a success closes it.
//!
//! A probe always ends: its result moves the breaker on, and a probe whose caller goes
//! away first (a client hanging up drops the request's future) hands the probe back, so
//! the next call probes at once. Without that, one cancelled probe would leave the
//! breaker refusing every call for good while the store answers.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Claimed, Compensation, Confirmation, Order, OrderState, ReserveReply, ReserveRequest,
    StockLoad, StockReading, Store, StoreError, StoreFuture, Unspent,
};
use crate::metrics::Metrics;
use crate::types::{Epoch, OrderId, Sku, Token, UserId};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const PROBING: u8 = 2;

/// Whether the breaker lets calls through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// One call is probing whether the store is back.
    Probing,
}

/// A store behind a timeout and a circuit breaker.
pub struct Breaker {
    inner: Arc<dyn Store>,
    timeout: Duration,
    threshold: u32,
    cooldown: Duration,
    state: AtomicU8,
    failures: AtomicU32,
    /// When the breaker last opened, in ms since `epoch`.
    opened_at: AtomicU64,
    epoch: Instant,
    metrics: Option<Arc<Metrics>>,
}

impl Breaker {
    /// Wraps `inner`: calls time out after `timeout`; `threshold` failures in a row open the
    /// breaker for `cooldown`.
    pub fn new(
        inner: Arc<dyn Store>,
        timeout: Duration,
        threshold: u32,
        cooldown: Duration,
    ) -> Self {
        Self {
            inner,
            timeout,
            threshold: threshold.max(1),
            cooldown,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics: None,
        }
    }

    /// Records step latency, failures and the breaker's state in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.breaker_open.with_label_values(&["store"]).set(0);
        self.metrics = Some(metrics);
        self
    }

    fn set_open_gauge(&self, open: bool) {
        if let Some(m) = &self.metrics {
            m.breaker_open
                .with_label_values(&["store"])
                .set(i64::from(open));
        }
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::Probing,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// May a call go through now? Moves Open → Probing for exactly one caller after the
    /// cool-down; that caller holds the returned [`Probe`] until its result is recorded.
    fn admit(&self) -> Admission<'_> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admission::Pass,
            OPEN => {
                let since = self
                    .now_ms()
                    .saturating_sub(self.opened_at.load(Ordering::Acquire));
                if since >= self.cooldown.as_millis() as u64
                    && self
                        .state
                        .compare_exchange(OPEN, PROBING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    Admission::Probe(Probe { breaker: self })
                } else {
                    Admission::Refuse
                }
            }
            // Someone is probing already.
            _ => Admission::Refuse,
        }
    }

    /// A probe ended without a result (its caller went away): open again with the
    /// cool-down already over, so the next call probes.
    fn probe_abandoned(&self) {
        let ready_at = self
            .now_ms()
            .saturating_sub(self.cooldown.as_millis() as u64);
        self.opened_at.store(ready_at, Ordering::Release);
        let _ = self
            .state
            .compare_exchange(PROBING, OPEN, Ordering::AcqRel, Ordering::Acquire);
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Release);
        if self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
            self.set_open_gauge(false);
        }
    }

    fn failure(&self) {
        let probing = self.state.load(Ordering::Acquire) == PROBING;
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if probing || n >= self.threshold {
            self.opened_at.store(self.now_ms(), Ordering::Release);
            if self.state.swap(OPEN, Ordering::AcqRel) != OPEN {
                tracing::warn!(failures = n, "store circuit breaker opened");
                self.set_open_gauge(true);
            }
        }
    }

    fn call<'a, T: Send + 'a>(
        &'a self,
        step: &'static str,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let probe = match self.admit() {
                Admission::Pass => None,
                Admission::Probe(p) => Some(p),
                Admission::Refuse => {
                    if let Some(m) = &self.metrics {
                        m.store_errors.with_label_values(&[step]).inc();
                    }
                    return Err(StoreError::Unavailable("circuit open".into()));
                }
            };
            let started = Instant::now();
            let result = match tokio::time::timeout(self.timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable("timed out".into())),
            };
            if let Some(m) = &self.metrics {
                m.store_seconds
                    .with_label_values(&[step])
                    .observe(started.elapsed().as_secs_f64());
            }
            match &result {
                Err(StoreError::Unavailable(_)) => {
                    if let Some(m) = &self.metrics {
                        m.store_errors.with_label_values(&[step]).inc();
                    }
                    self.failure()
                }
                Err(StoreError::Invariant(why)) => {
                    tracing::error!(step, %why, "oversell guard tripped");
                    if let Some(m) = &self.metrics {
                        m.oversell_guard.inc();
                    }
                    self.success()
                }
                // Any answer from the store, even "no such sale" or a refused stock
                // change, shows it is up.
                _ => self.success(),
            }
            // The result moved the breaker on; the probe is over.
            std::mem::forget(probe);
            result
        })
    }
}

/// What [`Breaker::admit`] decided for one call.
enum Admission<'a> {
    /// Closed: go ahead.
    Pass,
    /// Go ahead as the one probe.
    Probe(Probe<'a>),
    /// Open, or another call is probing.
    Refuse,
}

/// The right to probe, held by one call. Dropped before the call's result is recorded
/// (the call's future was dropped), it hands the probe back.
struct Probe<'a> {
    breaker: &'a Breaker,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.breaker.probe_abandoned();
    }
}

impl Store for Breaker {
    fn init_stock(
        &self,
        sku: &Sku,
        stock: u64,
        remembers: Option<&Epoch>,
    ) -> StoreFuture<'_, StockLoad> {
        self.call("init_stock", self.inner.init_stock(sku, stock, remembers))
    }
    fn mark_lost(&self, sku: &Sku, epoch: &Epoch) -> StoreFuture<'_, ()> {
        self.call("mark_lost", self.inner.mark_lost(sku, epoch))
    }
    fn set_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, Epoch> {
        self.call("set_stock", self.inner.set_stock(sku, stock))
    }
    fn add_stock(&self, sku: &Sku, delta: i64) -> StoreFuture<'_, u64> {
        self.call("add_stock", self.inner.add_stock(sku, delta))
    }
    fn stock(&self, sku: &Sku) -> StoreFuture<'_, StockReading> {
        self.call("stock", self.inner.stock(sku))
    }
    fn issue_token(&self, sku: &Sku, user: &UserId, ttl: Duration) -> StoreFuture<'_, Token> {
        self.call("issue_token", self.inner.issue_token(sku, user, ttl))
    }
    fn reserve(&self, req: &ReserveRequest) -> StoreFuture<'_, ReserveReply> {
        self.call("reserve", self.inner.reserve(req))
    }
    fn replay(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> StoreFuture<'_, Option<ReserveReply>> {
        self.call("replay", self.inner.replay(sku, token, user, unspent))
    }
    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>> {
        self.call("outbox", self.inner.outbox(sku, max))
    }
    fn claim(
        &self,
        sku: &Sku,
        consumer: &str,
        max: usize,
        claim_idle: Duration,
    ) -> StoreFuture<'_, Claimed> {
        self.call("claim", self.inner.claim(sku, consumer, max, claim_idle))
    }
    fn touch(
        &self,
        sku: &Sku,
        consumer: &str,
        orders: &[OrderId],
    ) -> StoreFuture<'_, Vec<OrderId>> {
        self.call("touch", self.inner.touch(sku, consumer, orders))
    }
    fn confirm(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Confirmation> {
        self.call("confirm", self.inner.confirm(sku, order_id, consumer))
    }
    fn compensate(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Compensation> {
        self.call("compensate", self.inner.compensate(sku, order_id, consumer))
    }
    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>> {
        self.call("order_state", self.inner.order_state(sku, order_id))
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        // Readiness probes bypass the breaker so they see the store itself, and a
        // successful probe closes the breaker early.
        Box::pin(async move {
            let r = match tokio::time::timeout(self.timeout, self.inner.ping()).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable("timed out".into())),
            };
            if r.is_ok() {
                self.success();
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::task::{Context, Waker};

    fn down() -> StoreError {
        StoreError::Unavailable("down".into())
    }

    #[tokio::test]
    async fn a_probe_whose_caller_goes_away_hands_the_probe_back() {
        let b = Breaker::new(
            Arc::new(MemoryStore::new()),
            Duration::from_secs(5),
            1,
            Duration::ZERO,
        );
        assert!(b.call("t", async { Err::<(), _>(down()) }).await.is_err());
        assert_eq!(b.state(), BreakerState::Open);
        // The probe's caller hangs up while the store is silent: its future is dropped.
        let mut probe = b.call("t", std::future::pending::<Result<(), StoreError>>());
        let poll = probe.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(poll.is_pending());
        assert_eq!(b.state(), BreakerState::Probing);
        drop(probe);
        assert_eq!(b.state(), BreakerState::Open, "the probe was handed back");
        // The store answers again: the next call probes and closes the breaker.
        assert!(b.call("t", async { Ok(()) }).await.is_ok());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn only_one_probe_at_a_time_and_a_failed_probe_reopens() {
        let b = Breaker::new(
            Arc::new(MemoryStore::new()),
            Duration::from_secs(5),
            1,
            Duration::ZERO,
        );
        assert!(b.call("t", async { Err::<(), _>(down()) }).await.is_err());
        let mut probe = b.call("t", std::future::pending::<Result<(), StoreError>>());
        let _ = probe.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        let second = b.call("t", async { Ok(()) }).await;
        assert!(
            matches!(second, Err(StoreError::Unavailable(_))),
            "{second:?}"
        );
        drop(probe);
        assert!(b.call("t", async { Err::<(), _>(down()) }).await.is_err());
        assert_eq!(b.state(), BreakerState::Open);
    }
}
