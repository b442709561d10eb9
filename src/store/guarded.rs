//! The store behind a timeout and a [`CircuitBreaker`]: every call is bounded by the store
//! timeout, and after a run of failures calls fail at once for a cool-down instead of
//! piling onto a dead or drowning Redis.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{
    Book, BookSteps, Definition, DrainSteps, Expected, FleetSteps, Line, OutboxSteps, StockSteps,
    TokenSteps, Written,
};
use super::{
    Cancellable, Cancellation, Claimed, Compensation, Confirmation, DrainLease, Entry, Member,
    Opening, Order, OrderState, OutboxDepth, Replay, ReserveReply, ReserveRequest, SaleControl,
    SaleControls, Spend, StockLoad, StockReading, Store, StoreError, StoreFuture, TicketRecord,
    TokenHold, Unspent,
};
use crate::breaker::CircuitBreaker;
use crate::metrics::Metrics;
use crate::types::{Epoch, OrderId, Sku, TicketId, Token, UserId};

/// A store behind a timeout and a circuit breaker.
pub struct GuardedStore {
    inner: Arc<dyn Store>,
    timeout: Duration,
    /// For the calls that belong to no sale (readiness, membership).
    breaker: CircuitBreaker,
    /// One per sale: a sale whose keys live on a dead Redis Cluster master fails alone,
    /// and the sales on live masters go on selling.
    sales: RwLock<HashMap<Sku, Arc<CircuitBreaker>>>,
    threshold: u32,
    cooldown: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl GuardedStore {
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
            breaker: CircuitBreaker::new("store", threshold, cooldown),
            sales: RwLock::new(HashMap::new()),
            threshold,
            cooldown,
            metrics: None,
        }
    }

    /// Records step latency, failures and the breaker's state in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.breaker = self
            .breaker
            .with_gauge(metrics.breaker_open.with_label_values(&["store"]));
        self.metrics = Some(metrics);
        self
    }

    /// The breaker of `sku`'s calls, made on first use.
    fn breaker_of(&self, sku: &Sku) -> Arc<CircuitBreaker> {
        if let Some(b) = self
            .sales
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sku)
        {
            return b.clone();
        }
        let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
        sales
            .entry(sku.clone())
            .or_insert_with(|| {
                let name = format!("store:{sku}");
                let b = CircuitBreaker::new(name.clone(), self.threshold, self.cooldown);
                Arc::new(match &self.metrics {
                    Some(m) => b.with_gauge(m.breaker_open.with_label_values(&[name.as_str()])),
                    None => b,
                })
            })
            .clone()
    }

    /// A call of sale `sku`'s, behind its breaker.
    fn call_for<'a, T: Send + 'a>(
        &'a self,
        sku: &Sku,
        step: &'static str,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let breaker = self.breaker_of(sku);
        Box::pin(async move { self.guarded(&breaker, step, fut).await })
    }

    /// A call that belongs to no sale, behind the store's own breaker.
    fn call<'a, T: Send + 'a>(
        &'a self,
        step: &'static str,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move { self.guarded(&self.breaker, step, fut).await })
    }

    async fn guarded<T>(
        &self,
        breaker: &CircuitBreaker,
        step: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        {
            let Some(permit) = breaker.admit() else {
                if let Some(m) = &self.metrics {
                    m.store_errors.with_label_values(&[step]).inc();
                }
                return Err(StoreError::Unavailable("circuit open".into()));
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
                    breaker.failure()
                }
                Err(StoreError::Invariant(why)) => {
                    tracing::error!(step, %why, "oversell guard tripped");
                    if let Some(m) = &self.metrics {
                        m.oversell_guard.inc();
                    }
                    breaker.success()
                }
                // Any answer from the store, even "no such sale" or a refused stock
                // change, shows it is up.
                _ => breaker.success(),
            }
            // The result moved the breaker on; a probe is over.
            permit.done();
            result
        }
    }
}

impl StockSteps for GuardedStore {
    fn init_stock(
        &self,
        sku: &Sku,
        stock: u64,
        remembers: Option<&Epoch>,
    ) -> StoreFuture<'_, StockLoad> {
        self.call_for(
            sku,
            "init_stock",
            self.inner.init_stock(sku, stock, remembers),
        )
    }

    fn mark_lost(&self, sku: &Sku, epoch: &Epoch) -> StoreFuture<'_, ()> {
        self.call_for(sku, "mark_lost", self.inner.mark_lost(sku, epoch))
    }

    fn set_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, Epoch> {
        self.call_for(sku, "set_stock", self.inner.set_stock(sku, stock))
    }

    fn add_stock(&self, sku: &Sku, delta: i64) -> StoreFuture<'_, u64> {
        self.call_for(sku, "add_stock", self.inner.add_stock(sku, delta))
    }

    fn stock(&self, sku: &Sku) -> StoreFuture<'_, StockReading> {
        self.call_for(sku, "stock", self.inner.stock(sku))
    }
}

impl TokenSteps for GuardedStore {
    fn reserve(&self, req: &ReserveRequest) -> StoreFuture<'_, ReserveReply> {
        self.call_for(&req.sku, "reserve", self.inner.reserve(req))
    }

    fn replay(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> StoreFuture<'_, Replay> {
        self.call_for(sku, "replay", self.inner.replay(sku, token, user, unspent))
    }

    fn hold_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
        until_ms: u64,
        entry: Entry,
    ) -> StoreFuture<'_, TokenHold> {
        self.call_for(
            sku,
            "hold_token",
            self.inner
                .hold_token(sku, token, user, ticket, until_ms, entry),
        )
    }

    fn release_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
    ) -> StoreFuture<'_, ()> {
        self.call_for(
            sku,
            "release_token",
            self.inner.release_token(sku, token, user, ticket),
        )
    }

    fn spend_sold_out(&self, sku: &Sku, spends: &[Spend]) -> StoreFuture<'_, ()> {
        self.call_for(
            sku,
            "spend_sold_out",
            self.inner.spend_sold_out(sku, spends),
        )
    }

    fn ticket_record(&self, sku: &Sku, ticket: &TicketId) -> StoreFuture<'_, Option<TicketRecord>> {
        self.call_for(sku, "ticket_record", self.inner.ticket_record(sku, ticket))
    }

    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>> {
        self.call_for(sku, "order_state", self.inner.order_state(sku, order_id))
    }
}

impl OutboxSteps for GuardedStore {
    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>> {
        self.call_for(sku, "outbox", self.inner.outbox(sku, max))
    }

    fn outbox_depth(&self, sku: &Sku) -> StoreFuture<'_, OutboxDepth> {
        self.call_for(sku, "outbox_depth", self.inner.outbox_depth(sku))
    }

    fn claim(
        &self,
        sku: &Sku,
        consumer: &str,
        max: usize,
        claim_idle: Duration,
    ) -> StoreFuture<'_, Claimed> {
        self.call_for(
            sku,
            "claim",
            self.inner.claim(sku, consumer, max, claim_idle),
        )
    }

    fn take_over(
        &self,
        sku: &Sku,
        consumer: &str,
        live: &[String],
        min_idle: Duration,
    ) -> StoreFuture<'_, Vec<OrderId>> {
        self.call_for(
            sku,
            "take_over",
            self.inner.take_over(sku, consumer, live, min_idle),
        )
    }

    fn touch(
        &self,
        sku: &Sku,
        consumer: &str,
        orders: &[OrderId],
    ) -> StoreFuture<'_, Vec<OrderId>> {
        self.call_for(sku, "touch", self.inner.touch(sku, consumer, orders))
    }

    fn confirm(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Confirmation> {
        self.call_for(sku, "confirm", self.inner.confirm(sku, order_id, consumer))
    }

    fn compensate(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Compensation> {
        self.call_for(
            sku,
            "compensate",
            self.inner.compensate(sku, order_id, consumer),
        )
    }

    fn cancel(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        cancellable: Cancellable,
    ) -> StoreFuture<'_, Cancellation> {
        self.call_for(sku, "cancel", self.inner.cancel(sku, order_id, cancellable))
    }
}

impl BookSteps for GuardedStore {
    fn sale_book(&self, known: u64) -> StoreFuture<'_, Option<Book>> {
        self.call("sale_book", self.inner.sale_book(known))
    }

    fn write_sale(&self, definition: &Definition, expected: Expected) -> StoreFuture<'_, Written> {
        self.call("write_sale", self.inner.write_sale(definition, expected))
    }
}

impl DrainSteps for GuardedStore {
    fn share_pending(
        &self,
        sku: &Sku,
        me: &str,
        pending: u64,
        ttl: Duration,
    ) -> StoreFuture<'_, u64> {
        self.call_for(
            sku,
            "share_pending",
            self.inner.share_pending(sku, me, pending, ttl),
        )
    }

    fn lease_drain(&self, sku: &Sku, want: u32, rate: u32) -> StoreFuture<'_, DrainLease> {
        self.call_for(sku, "lease_drain", self.inner.lease_drain(sku, want, rate))
    }

    fn advance_line(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, Line> {
        self.call_for(sku, "advance_line", self.inner.advance_line(sku, rate))
    }

    fn open_prequeue(&self, sku: &Sku, users: &[UserId], keep: u64) -> StoreFuture<'_, Opening> {
        self.call_for(
            sku,
            "open_prequeue",
            self.inner.open_prequeue(sku, users, keep),
        )
    }

    fn set_drain_rate(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, ()> {
        self.call_for(sku, "set_drain_rate", self.inner.set_drain_rate(sku, rate))
    }

    fn steer_drain_rate(&self, sku: &Sku, from: u32, to: u32) -> StoreFuture<'_, bool> {
        let steered = self.inner.steer_drain_rate(sku, from, to);
        self.call_for(sku, "steer_drain_rate", steered)
    }

    fn set_control(&self, sku: &Sku, control: SaleControl) -> StoreFuture<'_, ()> {
        self.call_for(sku, "set_control", self.inner.set_control(sku, control))
    }

    fn controls(&self, sku: &Sku) -> StoreFuture<'_, SaleControls> {
        self.call_for(sku, "controls", self.inner.controls(sku))
    }
}

impl FleetSteps for GuardedStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        // Readiness probes bypass the breaker so they see the store itself, and a
        // successful probe closes the breaker early.
        Box::pin(async move {
            let r = match tokio::time::timeout(self.timeout, self.inner.ping()).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable("timed out".into())),
            };
            if r.is_ok() {
                self.breaker.success();
            }
            r
        })
    }

    fn claim_layout(&self, layout: u32) -> StoreFuture<'_, ()> {
        self.call("claim_layout", self.inner.claim_layout(layout))
    }

    fn announce(&self, member: &Member, ttl: Duration) -> StoreFuture<'_, Vec<Member>> {
        self.call("announce", self.inner.announce(member, ttl))
    }

    fn members(&self) -> StoreFuture<'_, Vec<Member>> {
        self.call("members", self.inner.members())
    }

    fn leave(&self, member: &Member) -> StoreFuture<'_, ()> {
        self.call("leave", self.inner.leave(member))
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
        let b = GuardedStore::new(
            Arc::new(MemoryStore::new()),
            Duration::from_secs(5),
            1,
            Duration::ZERO,
        );
        assert!(b.call("t", async { Err::<(), _>(down()) }).await.is_err());
        // The probe's caller hangs up while the store is silent: its future is dropped.
        let mut probe = b.call("t", std::future::pending::<Result<(), StoreError>>());
        let poll = probe.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(poll.is_pending());
        assert!(
            b.call("t", async { Ok(()) }).await.is_err(),
            "a probe is in flight: others are refused"
        );
        drop(probe);
        // The probe was handed back and the store answers again: the next call probes and
        // closes the breaker, and the one after it passes too.
        assert!(b.call("t", async { Ok(()) }).await.is_ok());
        assert!(b.call("t", async { Ok(()) }).await.is_ok());
    }

    #[tokio::test]
    async fn only_one_probe_at_a_time_and_a_failed_probe_reopens() {
        let b = GuardedStore::new(
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
        let b = GuardedStore::new(
            Arc::new(MemoryStore::new()),
            Duration::from_secs(5),
            1,
            Duration::from_secs(3600),
        );
        assert!(b.call("t", async { Err::<(), _>(down()) }).await.is_err());
        assert!(
            b.call("t", async { Ok(()) }).await.is_err(),
            "open: refused without asking the store"
        );
    }
}
