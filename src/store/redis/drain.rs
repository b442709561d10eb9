//! The Redis store's drain steps ([`DrainSteps`]): the shared drain budget, pending counts
//! and operators' settings.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::RedisStore;
use crate::store::{
    DrainLease, DrainSteps, Line, Opening, SaleControl, SaleControls, Sealed, StoreError,
    StoreFuture,
};
use crate::types::{Sku, UserId};

impl DrainSteps for RedisStore {
    fn share_pending(
        &self,
        sku: &Sku,
        me: &str,
        pending: u64,
        ttl: Duration,
    ) -> StoreFuture<'_, u64> {
        let k = self.keys(sku);
        let me = me.to_owned();
        Box::pin(async move {
            let mut c = self.conn().await?;
            self.exec(
                self.scripts
                    .share_pending
                    .key(k.pending())
                    .arg(&me)
                    .arg(pending)
                    .arg(ttl.as_millis().min(u128::from(u64::MAX)) as u64)
                    .invoke_async(&mut c),
            )
            .await
        })
    }

    fn lease_drain(&self, sku: &Sku, want: u32, rate: u32) -> StoreFuture<'_, DrainLease> {
        let k = self.keys(sku);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let (granted, rate, next_in_us): (u32, u32, u64) = self
                .exec(
                    self.scripts
                        .lease_drain
                        .key(k.drain())
                        .key(k.drain_rate())
                        .arg(want)
                        .arg(rate)
                        .arg(crate::store::lease::LEASE_PERIOD.as_micros() as u64)
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(DrainLease {
                granted,
                rate,
                next_in: Duration::from_micros(next_in_us),
            })
        })
    }

    fn advance_line(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, Line> {
        let k = self.keys(sku);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let (cursor, admitted, rate): (u64, u64, u32) = self
                .exec(
                    self.scripts
                        .advance_line
                        .key(k.line())
                        .key(k.drain_rate())
                        .arg(rate)
                        .arg(crate::store::lease::LEASE_PERIOD.as_micros() as u64)
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(Line {
                cursor,
                admitted,
                rate,
            })
        })
    }

    fn open_prequeue(&self, sku: &Sku, users: &[UserId], keep: u64) -> StoreFuture<'_, Opening> {
        let k = self.keys(sku);
        let tickets: Vec<String> = users.iter().map(|u| u.as_str().to_owned()).collect();
        Box::pin(async move {
            let mut c = self.conn().await?;
            let mut script = self.scripts.open_prequeue.key(k.line());
            script.key(k.prequeue()).arg(keep);
            for t in &tickets {
                script.arg(t);
            }
            let reply: Vec<u64> = self.exec(script.invoke_async(&mut c)).await?;
            let [base, size, kept, cursor, admitted, places @ ..] = reply.as_slice() else {
                return Err(StoreError::Rejected(
                    "unexpected open_prequeue reply".into(),
                ));
            };
            Ok(Opening {
                sealed: Sealed {
                    base: *base,
                    size: *size,
                    kept: Some(*kept),
                },
                places: places.iter().map(|p| (*p > 0).then_some(*p)).collect(),
                cursor: *cursor,
                admitted: *admitted,
            })
        })
    }

    fn set_drain_rate(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        Box::pin(async move {
            let mut c = self.conn().await?;
            self.exec(c.set::<_, _, ()>(k.drain_rate(), rate.max(1)))
                .await
        })
    }

    fn steer_drain_rate(&self, sku: &Sku, from: u32, to: u32) -> StoreFuture<'_, bool> {
        let k = self.keys(sku);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let set: u32 = self
                .exec(
                    self.scripts
                        .steer_drain
                        .key(k.drain_rate())
                        .arg(from)
                        .arg(to.max(1))
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(set == 1)
        })
    }

    fn set_control(&self, sku: &Sku, control: SaleControl) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        let (field, value) = match control {
            SaleControl::Paused(p) => ("paused", u64::from(p)),
            SaleControl::Draining(d) => ("draining", u64::from(d)),
            SaleControl::Capacity(c) => ("capacity", c as u64),
        };
        Box::pin(async move {
            let mut c = self.conn().await?;
            self.exec(c.hset::<_, _, _, ()>(k.controls(), field, value))
                .await
        })
    }

    fn controls(&self, sku: &Sku) -> StoreFuture<'_, SaleControls> {
        let k = self.keys(sku);
        Box::pin(async move {
            let mut c = self.conn().await?;
            // Both keys carry the sale's hash tag: one node, one round trip.
            let (fields, rate): (HashMap<String, String>, Option<String>) = self
                .exec(
                    redis::pipe()
                        .hgetall(k.controls())
                        .get(k.drain_rate())
                        .query_async(&mut c),
                )
                .await?;
            // What does not parse (a hand edit) is as good as unset: the config holds.
            let flag = |name: &str| match fields.get(name).map(String::as_str) {
                Some("1") => Some(true),
                Some("0") => Some(false),
                _ => None,
            };
            Ok(SaleControls {
                paused: flag("paused"),
                draining: flag("draining"),
                capacity: fields.get("capacity").and_then(|c| c.parse().ok()),
                drain_rate: rate.and_then(|r| r.parse().ok()).filter(|&r| r > 0),
            })
        })
    }
}
