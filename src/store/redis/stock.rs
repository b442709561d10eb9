//! The Redis store's stock steps ([`StockSteps`]): a sale's stock loaded once, read, changed by
//! operators.

use redis::Value;

use super::reply::{stock_figure, text};
use super::{unavailable, RedisStore};
use crate::store::{StockLoad, StockReading, StockSteps, StoreError, StoreFuture};
use crate::types::{Epoch, Sku, MAX_STOCK};

impl StockSteps for RedisStore {
    fn init_stock(
        &self,
        sku: &Sku,
        stock: u64,
        remembers: Option<&Epoch>,
    ) -> StoreFuture<'_, StockLoad> {
        let k = self.keys(sku);
        let (sku, remembers) = (sku.clone(), remembers.cloned());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .load_stock
                        .key(k.stock())
                        .key(k.epoch())
                        .arg(stock)
                        .arg(Epoch::initial().as_str())
                        .arg(remembers.as_ref().map_or("", Epoch::as_str))
                        .invoke_async(&mut c),
                )
                .await?;
            let field = |i: usize| reply.get(i).and_then(text).unwrap_or_default();
            let units = || match reply.get(1) {
                Some(v) => stock_figure(v, &sku),
                None => Err(unavailable("load_stock answered without a figure")),
            };
            match field(0).as_str() {
                "held" => Ok(StockLoad::Held {
                    units: units()?,
                    epoch: Epoch::from_store(&field(2)),
                }),
                "created" => Ok(StockLoad::Created {
                    units: units()?,
                    epoch: Epoch::from_store(&field(2)),
                }),
                "lost" => Ok(StockLoad::Lost),
                other => Err(unavailable(format!("unexpected load outcome `{other}`"))),
            }
        })
    }

    fn mark_lost(&self, sku: &Sku, epoch: &Epoch) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        let tombstone = format!("lost-{epoch}");
        Box::pin(async move {
            let mut c = self.conn().await?;
            let _: i64 = self
                .exec(
                    self.scripts
                        .mark_lost
                        .key(k.stock())
                        .key(k.epoch())
                        .arg(&tombstone)
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(())
        })
    }

    fn set_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, Epoch> {
        let k = self.keys(sku);
        Box::pin(async move {
            if stock > MAX_STOCK {
                return Err(StoreError::OutOfRange { units: stock });
            }
            let epoch = Epoch::loaded();
            let mut c = self.conn().await?;
            let _: String = self
                .exec(
                    self.scripts
                        .set_stock
                        .key(k.stock())
                        .key(k.epoch())
                        .arg(stock)
                        .arg(epoch.as_str())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(epoch)
        })
    }

    fn add_stock(&self, sku: &Sku, delta: i64) -> StoreFuture<'_, u64> {
        let k = self.keys(sku);
        let sku = sku.clone();
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .add_stock
                        .key(k.stock())
                        .arg(delta)
                        .arg(MAX_STOCK)
                        .invoke_async(&mut c),
                )
                .await?;
            let units = match reply.get(1) {
                Some(v) => stock_figure(v, &sku)?,
                None => 0,
            };
            match reply.first().and_then(text).as_deref() {
                Some("added") => Ok(units),
                Some("out_of_range") => Err(StoreError::OutOfRange { units }),
                _ => Err(StoreError::UnknownSale(sku)),
            }
        })
    }

    fn stock(&self, sku: &Sku) -> StoreFuture<'_, StockReading> {
        let k = self.keys(sku);
        let sku = sku.clone();
        Box::pin(async move {
            let mut c = self.conn().await?;
            let (units, epoch): (Option<Value>, Option<String>) = self
                .exec(
                    redis::cmd("MGET")
                        .arg(k.stock())
                        .arg(k.epoch())
                        .query_async(&mut c),
                )
                .await?;
            match units {
                Some(Value::Nil) | None => Err(StoreError::UnknownSale(sku)),
                Some(v) => Ok(StockReading {
                    units: stock_figure(&v, &sku)?,
                    epoch: epoch.as_deref().map(Epoch::from_store),
                }),
            }
        })
    }
}
