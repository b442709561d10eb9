//! The memory store's outbox steps ([`OutboxSteps`]): reserved orders claimed by deliverers,
//! confirmed or compensated.

use std::time::{Duration, Instant, SystemTime};

use super::{lock, ready, MemoryStore};
use crate::store::{
    Cancellable, Cancellation, Claimed, Compensation, Confirmation, Order, OrderState, OutboxDepth,
    OutboxSteps, StoreFuture,
};
use crate::types::unix_millis;
use crate::types::{OrderId, Sku};

impl OutboxSteps for MemoryStore {
    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>> {
        ready(self.sale(sku).map(|sale| {
            let d = lock(&sale);
            d.outbox
                .iter()
                .take(max)
                .filter_map(|id| d.orders.get(id).map(|o| o.order.clone()))
                .collect()
        }))
    }

    fn outbox_depth(&self, sku: &Sku) -> StoreFuture<'_, OutboxDepth> {
        ready(self.sale(sku).map(|sale| {
            let d = lock(&sale);
            OutboxDepth {
                orders: d.outbox.len() as u64,
                oldest_reserved_at: d
                    .outbox
                    .iter()
                    .find_map(|id| d.orders.get(id).map(|o| o.order.reserved_at)),
            }
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
                    .filter_map(|id| d.orders.get(id).map(|o| o.order.clone()))
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
            let Some(kept) = d.orders.get_mut(order_id) else {
                return Confirmation::Unknown;
            };
            match kept.state {
                // Cancelled only after it was confirmed (or, in stream mode, which the
                // memory store does not serve, consumed).
                OrderState::Confirmed | OrderState::Cancelled => Confirmation::AlreadyConfirmed,
                OrderState::Failed => Confirmation::Compensated,
                OrderState::Reserved => {
                    kept.state = OrderState::Confirmed;
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
                Some(kept) => match kept.state {
                    OrderState::Failed => return Compensation::AlreadyFailed,
                    OrderState::Confirmed | OrderState::Cancelled => {
                        return Compensation::Confirmed
                    }
                    OrderState::Reserved => {
                        kept.state = OrderState::Failed;
                        (kept.order.user_id.clone(), kept.order.quantity)
                    }
                },
            };
            d.stock += u64::from(quantity);
            d.give_back(&user, quantity);
            d.settle(order_id, forget_at);
            Compensation::Restored { remaining: d.stock }
        }))
    }

    fn cancel(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        cancellable: Cancellable,
    ) -> StoreFuture<'_, Cancellation> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let loading = d.loading;
            let Some(kept) = d.orders.get_mut(order_id) else {
                return Cancellation::Unknown;
            };
            let (now, restocked) = match kept.state {
                OrderState::Failed => return Cancellation::Compensated,
                OrderState::Reserved if cancellable == Cancellable::Delivered => {
                    return Cancellation::NotDelivered
                }
                OrderState::Cancelled => (false, kept.restocked),
                OrderState::Reserved | OrderState::Confirmed => {
                    // The units go back only under the loading it was reserved in: a
                    // figure an operator loaded since already says what is for sale.
                    kept.state = OrderState::Cancelled;
                    kept.restocked = kept.loading == loading;
                    (true, kept.restocked)
                }
            };
            let (user_id, quantity) = (kept.order.user_id.clone(), kept.order.quantity);
            if now {
                if restocked {
                    d.stock += u64::from(quantity);
                }
                d.give_back(&user_id, quantity);
                // A reserved order (stream mode) leaves the outbox; a confirmed one keeps
                // the expiry it settled with.
                if d.outbox.contains(order_id) {
                    d.settle(order_id, Instant::now() + self.replay_ttl);
                }
            }
            Cancellation::Cancelled {
                now,
                restocked,
                remaining: d.stock,
                user_id,
                quantity,
            }
        }))
    }
}
