//! The Redis store's outbox steps ([`OutboxSteps`]): reserved orders claimed by deliverers,
//! confirmed or compensated.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::link::Conn;
use super::reply::{entries_of, items, order_of, stock_figure, text};
use super::{RedisStore, DELIVERERS, MAX_PAGES, TAKE_OVER_BATCH};
use crate::store::{
    Cancellable, Cancellation, Claimed, Compensation, Confirmation, Order, OutboxDepth,
    OutboxSteps, StoreError, StoreFuture,
};
use crate::types::{OrderId, Sku};

/// One stream entry as XRANGE returns it: its id and fields.
type StreamEntry = (String, HashMap<String, String>);

impl OutboxSteps for RedisStore {
    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>> {
        let sku = sku.clone();
        Box::pin(async move { self.outbox_now(&sku, max).await })
    }

    fn outbox_depth(&self, sku: &Sku) -> StoreFuture<'_, OutboxDepth> {
        let sku = sku.clone();
        Box::pin(async move {
            let k = self.keys(&sku);
            let mut c = self.conn().await?;
            // Settled orders leave the stream: its length is what is not delivered yet,
            // its first entry the oldest of them.
            let (orders, first): (u64, Vec<StreamEntry>) = self
                .exec(
                    redis::pipe()
                        .cmd("XLEN")
                        .arg(k.outbox())
                        .cmd("XRANGE")
                        .arg(k.outbox())
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut c),
                )
                .await?;
            Ok(OutboxDepth {
                orders,
                oldest_reserved_at: first
                    .into_iter()
                    .find_map(|(_, f)| order_of(&f))
                    .map(|o| o.reserved_at),
            })
        })
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

    fn cancel(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        cancellable: Cancellable,
    ) -> StoreFuture<'_, Cancellation> {
        let k = self.keys(sku);
        let (id, sku) = (*order_id, sku.clone());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .cancel
                        .key(k.order(&id))
                        .key(k.stock())
                        .key(k.buyers())
                        .key(k.outbox())
                        .key(k.epoch())
                        .arg(match cancellable {
                            Cancellable::Delivered => "0",
                            Cancellable::Reserved => "1",
                        })
                        .arg(self.replay_ttl_ms())
                        .invoke_async(&mut c),
                )
                .await?;
            cancellation(&reply, &sku)
        })
    }
}

/// The cancel script's answer.
fn cancellation(reply: &[Value], sku: &Sku) -> Result<Cancellation, StoreError> {
    let figure = |i: usize| -> Result<u64, StoreError> {
        match reply.get(i) {
            Some(v) => stock_figure(v, sku),
            None => Ok(0),
        }
    };
    let outcome = reply.first().and_then(text);
    let now = match outcome.as_deref() {
        Some("cancelled") => true,
        Some("already_cancelled") => false,
        Some("not_delivered") => return Ok(Cancellation::NotDelivered),
        Some("compensated") => return Ok(Cancellation::Compensated),
        Some("no_stock") => return Ok(Cancellation::NoStock),
        _ => return Ok(Cancellation::Unknown),
    };
    Ok(Cancellation::Cancelled {
        now,
        restocked: figure(1)? == 1,
        remaining: figure(2)?,
        user_id: reply.get(3).and_then(text).unwrap_or_default(),
        quantity: u32::try_from(figure(4)?).unwrap_or(u32::MAX),
    })
}

impl RedisStore {
    async fn claim_now(
        &self,
        sku: &Sku,
        consumer: &str,
        max: usize,
        claim_idle: Duration,
    ) -> Result<Claimed, StoreError> {
        let k = self.keys(sku);
        let stream = k.outbox();
        let mut c = self.conn().await?;
        self.ensure_group(&mut c, &stream).await?;
        // Every entry this deliverer holds (it must see all it owns: what it remembers of
        // an order is forgotten once the order is not among them), then up to `max` new
        // ones.
        let (mut found, complete) = self.read_own(&mut c, &stream, consumer, max).await?;
        let fresh = self.read_group(&mut c, &stream, consumer, max, ">").await?;
        found.extend(fresh.into_iter().filter_map(|(id, f)| Some((id, f?))));
        // Orders another deliverer has sat on for too long: it probably died.
        let reply: Value = self
            .exec(
                redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(DELIVERERS)
                    .arg(consumer)
                    .arg(claim_idle.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut c),
            )
            .await?;
        let mut taken_over = Vec::new();
        if let Some(entries) = items(&reply).get(1) {
            let entries = entries_of(entries);
            taken_over.extend(
                entries
                    .iter()
                    .filter_map(|(_, f)| f.get("order_id").and_then(|id| OrderId::parse(id))),
            );
            found.extend(entries);
        }
        let mut seen = std::collections::HashSet::new();
        found.retain(|(id, _)| seen.insert(id.clone()));
        // Asked of the outbox's node (a keyless TIME could go to any node, maybe a dead one).
        let (secs, micros): (u64, u64) = self
            .exec(self.scripts.clock.key(&stream).invoke_async(&mut c))
            .await?;
        // Deliverers gone for ten takeover periods, holding nothing, leave the group.
        let reap_after = claim_idle.saturating_mul(10).as_millis() as u64;
        let _: i64 = self
            .exec(
                self.scripts
                    .reap
                    .key(&stream)
                    .arg(DELIVERERS)
                    .arg(consumer)
                    .arg(reap_after)
                    .invoke_async(&mut c),
            )
            .await?;
        Ok(Claimed {
            orders: found
                .into_iter()
                .filter_map(|(_, f)| order_of(&f))
                .collect(),
            now_ms: secs.saturating_mul(1000).saturating_add(micros / 1000),
            taken_over,
            complete,
        })
    }

    /// One XREADGROUP page from `from` (`0`-based history or `>` for new entries): each
    /// entry's id and fields (`None` for an entry deleted meanwhile).
    async fn read_group(
        &self,
        c: &mut Conn,
        stream: &str,
        consumer: &str,
        max: usize,
        from: &str,
    ) -> Result<Vec<(String, Option<HashMap<String, String>>)>, StoreError> {
        let reply: Value = self
            .exec(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(DELIVERERS)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(max)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(from)
                    .query_async(c),
            )
            .await?;
        let mut out = Vec::new();
        for per_stream in items(&reply) {
            if let Some(entries) = items(per_stream).get(1) {
                out.extend(items(entries).iter().filter_map(|entry| {
                    let pair = items(entry);
                    let id = text(pair.first()?)?;
                    let fields = pair.get(1).and_then(|f| match f {
                        Value::Array(kv) => Some(
                            kv.chunks(2)
                                .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
                                .collect(),
                        ),
                        _ => None,
                    });
                    Some((id, fields))
                }));
            }
        }
        Ok(out)
    }

    async fn outbox_now(&self, sku: &Sku, max: usize) -> Result<Vec<Order>, StoreError> {
        let k = self.keys(sku);
        let mut c = self.conn().await?;
        let entries: Vec<(String, HashMap<String, String>)> = self
            .exec(
                redis::cmd("XRANGE")
                    .arg(k.outbox())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut c),
            )
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(_, f)| order_of(&f))
            .collect())
    }

    /// Creates the deliverers' group on `stream`, from the stream's start, unless it exists.
    async fn ensure_group(&self, c: &mut Conn, stream: &str) -> Result<(), StoreError> {
        let created: Result<(), StoreError> = self
            .exec(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(stream)
                    .arg(DELIVERERS)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(c),
            )
            .await;
        match created {
            // BUSYGROUP: it exists already.
            Err(e) if !e.to_string().contains("BUSYGROUP") => Err(e),
            _ => Ok(()),
        }
    }

    /// The entries `consumer` holds, page by page, and whether that is all of them (at
    /// most [`MAX_PAGES`] pages, so that a huge backlog cannot keep one round reading
    /// forever).
    async fn read_own(
        &self,
        c: &mut Conn,
        stream: &str,
        consumer: &str,
        max: usize,
    ) -> Result<(Vec<(String, HashMap<String, String>)>, bool), StoreError> {
        let mut found = Vec::new();
        let mut from = "0".to_owned();
        let mut pages = 0;
        loop {
            let page = self.read_group(c, stream, consumer, max, &from).await?;
            let full = page.len() >= max;
            let Some(last) = page.last().map(|(id, _)| id.clone()) else {
                break;
            };
            found.extend(page.into_iter().filter_map(|(id, f)| Some((id, f?))));
            pages += 1;
            if !full || pages >= MAX_PAGES {
                break;
            }
            from = last;
        }
        Ok((found, pages < MAX_PAGES))
    }
}
