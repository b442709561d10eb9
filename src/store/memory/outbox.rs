//! The memory store's outbox steps ([`OutboxSteps`]): reserved orders claimed by deliverers,
//! confirmed or compensated.

use std::time::{Duration, Instant, SystemTime};

use super::{lock, ready, MemoryStore};
use crate::store::{
    Claimed, Compensation, Confirmation, Order, OrderState, OutboxSteps, StoreFuture,
};
use crate::types::unix_millis;
use crate::types::{OrderId, Sku, UserId};

impl OutboxSteps for MemoryStore {
    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>> {
        ready(self.sale(sku).map(|sale| {
            let d = lock(&sale);
            d.outbox
                .iter()
                .take(max)
                .filter_map(|id| d.orders.get(id).map(|(o, _)| o.clone()))
                .collect()
        }))
    }

    fn claim(
        &self,
        sku: &Sku,
        _consumer: &str,
        max: usize,
        _idle: Duration,
    ) -> StoreFuture<'_, Claimed> {
        // One process, one deliverer: everything in the outbox is its to deliver.
        ready(self.sale(sku).map(|sale| {
            let d = lock(&sale);
            Claimed {
                orders: d
                    .outbox
                    .iter()
                    .take(max)
                    .filter_map(|id| d.orders.get(id).map(|(o, _)| o.clone()))
                    .collect(),
                now_ms: unix_millis(SystemTime::now()),
                taken_over: d
                    .outbox
                    .iter()
                    .take(max)
                    .filter(|id| d.restored.contains(id))
                    .copied()
                    .collect(),
                complete: d.outbox.len() <= max,
            }
        }))
    }

    fn take_over(
        &self,
        _sku: &Sku,
        _consumer: &str,
        _live: &[String],
        _min_idle: Duration,
    ) -> StoreFuture<'_, Vec<OrderId>> {
        // One process, one deliverer: nobody else's orders to take.
        ready(Ok(Vec::new()))
    }

    fn touch(
        &self,
        _sku: &Sku,
        _consumer: &str,
        orders: &[OrderId],
    ) -> StoreFuture<'_, Vec<OrderId>> {
        // One deliverer: nobody else takes orders over.
        ready(Ok(orders.to_vec()))
    }

    fn confirm(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        _consumer: &str,
    ) -> StoreFuture<'_, Confirmation> {
        let forget_at = Instant::now() + self.replay_ttl;
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            match d.orders.get_mut(order_id) {
                None => Confirmation::Unknown,
                Some((_, OrderState::Confirmed)) => Confirmation::AlreadyConfirmed,
                Some((_, OrderState::Failed)) => Confirmation::Compensated,
                Some((_, state @ OrderState::Reserved)) => {
                    *state = OrderState::Confirmed;
                    d.settle(order_id, forget_at);
                    Confirmation::Confirmed
                }
            }
        }))
    }

    fn compensate(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        _consumer: &str,
    ) -> StoreFuture<'_, Compensation> {
        let forget_at = Instant::now() + self.replay_ttl;
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let (user, quantity) = match d.orders.get_mut(order_id) {
                None => return Compensation::Unknown,
                Some((_, OrderState::Failed)) => return Compensation::AlreadyFailed,
                Some((_, OrderState::Confirmed)) => return Compensation::Confirmed,
                Some((order, state)) => {
                    *state = OrderState::Failed;
                    (order.user_id.clone(), order.quantity)
                }
            };
            d.stock += u64::from(quantity);
            if let Some(user) = UserId::parse(&user) {
                if let Some(held) = d.buyers.get_mut(&user) {
                    *held = held.saturating_sub(quantity);
                    if *held == 0 {
                        d.buyers.remove(&user);
                    }
                }
            }
            d.settle(order_id, forget_at);
            Compensation::Restored { remaining: d.stock }
        }))
    }
}
