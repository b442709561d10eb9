//! The Redis store's the outbox of reserved orders: claimed, confirmed or compensated ([`OutboxSteps`]).

use std::time::Duration;

use redis::Value;

use super::reply::{entries_of, items, stock_figure, text};
use super::{RedisStore, DELIVERERS, TAKE_OVER_BATCH};
use crate::store::{
    Claimed, Compensation, Confirmation, Order, OutboxSteps, StoreError, StoreFuture,
};
use crate::types::{OrderId, Sku};

impl OutboxSteps for RedisStore {
    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>> {
        let sku = sku.clone();
        Box::pin(async move { self.outbox_now(&sku, max).await })
    }

    fn claim(
        &self,
        sku: &Sku,
        consumer: &str,
        max: usize,
        claim_idle: Duration,
    ) -> StoreFuture<'_, Claimed> {
        let (sku, consumer) = (sku.clone(), consumer.to_owned());
        Box::pin(async move { self.claim_now(&sku, &consumer, max, claim_idle).await })
    }

    fn take_over(
        &self,
        sku: &Sku,
        consumer: &str,
        live: &[String],
        min_idle: Duration,
    ) -> StoreFuture<'_, Vec<OrderId>> {
        let stream = self.keys(sku).outbox();
        let (consumer, live) = (consumer.to_owned(), live.to_vec());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let min_idle_ms = min_idle.as_millis().min(u128::from(u64::MAX)) as u64;
            // The summary names every deliverer holding orders; no group, nothing held.
            let summary: Value = match self
                .exec(
                    redis::cmd("XPENDING")
                        .arg(&stream)
                        .arg(DELIVERERS)
                        .query_async(&mut c),
                )
                .await
            {
                Ok(v) => v,
                // No deliverer has read this outbox yet: nobody's orders to take.
                Err(StoreError::Rejected(e) | StoreError::Unavailable(e))
                    if e.contains("NOGROUP") =>
                {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(e),
            };
            let gone: Vec<String> = items(&summary)
                .get(3)
                .map(items)
                .unwrap_or_default()
                .iter()
                .filter_map(|pair| text(items(pair).first()?))
                .filter(|name| *name != consumer && !live.contains(name))
                .collect();
            let mut taken = Vec::new();
            for name in gone {
                let pending: Value = self
                    .exec(
                        redis::cmd("XPENDING")
                            .arg(&stream)
                            .arg(DELIVERERS)
                            .arg("IDLE")
                            .arg(min_idle_ms)
                            .arg("-")
                            .arg("+")
                            .arg(TAKE_OVER_BATCH)
                            .arg(&name)
                            .query_async(&mut c),
                    )
                    .await?;
                let ids: Vec<String> = items(&pending)
                    .iter()
                    .filter_map(|e| text(items(e).first()?))
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                // XCLAIM checks the idle time again, atomically: an order its deliverer
                // touched meanwhile stays with it.
                let claimed: Value = self
                    .exec(
                        redis::cmd("XCLAIM")
                            .arg(&stream)
                            .arg(DELIVERERS)
                            .arg(&consumer)
                            .arg(min_idle_ms)
                            .arg(&ids)
                            .query_async(&mut c),
                    )
                    .await?;
                taken.extend(
                    entries_of(&claimed)
                        .iter()
                        .filter_map(|(_, f)| f.get("order_id").and_then(|id| OrderId::parse(id))),
                );
            }
            Ok(taken)
        })
    }

    fn touch(
        &self,
        sku: &Sku,
        consumer: &str,
        orders: &[OrderId],
    ) -> StoreFuture<'_, Vec<OrderId>> {
        let k = self.keys(sku);
        let (consumer, orders) = (consumer.to_owned(), orders.to_vec());
        Box::pin(async move {
            if orders.is_empty() {
                return Ok(orders);
            }
            let mut script = self.scripts.touch.key(k.outbox());
            for id in &orders {
                script.key(k.order(id));
            }
            script.arg(DELIVERERS).arg(&consumer);
            let mut c = self.conn().await?;
            let owned: Vec<usize> = self.exec(script.invoke_async(&mut c)).await?;
            Ok(owned
                .into_iter()
                .filter_map(|i| orders.get(i.wrapping_sub(1)).copied())
                .collect())
        })
    }

    fn confirm(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Confirmation> {
        let k = self.keys(sku);
        let (id, consumer) = (*order_id, consumer.to_owned());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let done: String = self
                .exec(
                    self.scripts
                        .confirm
                        .key(k.order(&id))
                        .key(k.outbox())
                        .arg(DELIVERERS)
                        .arg(&consumer)
                        .arg(self.replay_ttl_ms())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(match done.as_str() {
                "confirmed" => Confirmation::Confirmed,
                "already_confirmed" => Confirmation::AlreadyConfirmed,
                "compensated" => Confirmation::Compensated,
                "not_owner" => Confirmation::NotOwner,
                _ => Confirmation::Unknown,
            })
        })
    }

    fn compensate(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Compensation> {
        let k = self.keys(sku);
        let (id, consumer, sku) = (*order_id, consumer.to_owned(), sku.clone());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .compensate
                        .key(k.order(&id))
                        .key(k.stock())
                        .key(k.buyers())
                        .key(k.outbox())
                        .arg(DELIVERERS)
                        .arg(&consumer)
                        .arg(self.replay_ttl_ms())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(match reply.first().and_then(text).as_deref() {
                Some("restored") => Compensation::Restored {
                    remaining: match reply.get(1) {
                        Some(v) => stock_figure(v, &sku)?,
                        None => 0,
                    },
                },
                Some("already_failed") => Compensation::AlreadyFailed,
                Some("confirmed") => Compensation::Confirmed,
                Some("not_owner") => Compensation::NotOwner,
                Some("no_stock") => return Err(StoreError::UnknownSale(sku)),
                _ => Compensation::Unknown,
            })
        })
    }
}
