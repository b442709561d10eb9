//! The memory store's stock steps ([`StockSteps`]): a sale's stock loaded once, read, changed by
//! operators.

use super::{lock, ready, MemoryStore};
use crate::store::{StockLoad, StockReading, StockSteps, StoreError, StoreFuture};
use crate::types::{Epoch, Sku, MAX_STOCK};

impl StockSteps for MemoryStore {
    fn init_stock(
        &self,
        sku: &Sku,
        stock: u64,
        remembers: Option<&Epoch>,
    ) -> StoreFuture<'_, StockLoad> {
        if let Ok(sale) = self.sale(sku) {
            let d = lock(&sale);
            return ready(Ok(StockLoad::Held {
                units: d.stock,
                epoch: d.epoch.clone(),
            }));
        }
        if remembers.is_some() {
            return ready(Ok(StockLoad::Lost));
        }
        let (sale, _) = self.sale_or_create(sku, stock, Epoch::initial());
        let d = lock(&sale);
        ready(Ok(StockLoad::Created {
            units: d.stock,
            epoch: d.epoch.clone(),
        }))
    }

    fn mark_lost(&self, _sku: &Sku, _epoch: &Epoch) -> StoreFuture<'_, ()> {
        ready(Ok(()))
    }

    fn set_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, Epoch> {
        if stock > MAX_STOCK {
            return ready(Err(StoreError::OutOfRange { units: stock }));
        }
        let epoch = Epoch::loaded();
        let (sale, _) = self.sale_or_create(sku, stock, epoch.clone());
        let mut d = lock(&sale);
        d.stock = stock;
        d.epoch = epoch.clone();
        d.loading = d.loading.wrapping_add(1);
        ready(Ok(epoch))
    }

    fn add_stock(&self, sku: &Sku, delta: i64) -> StoreFuture<'_, u64> {
        ready(self.sale(sku).and_then(|sale| {
            let mut d = lock(&sale);
            let after = i128::from(d.stock) + i128::from(delta);
            if after < 0 || after > i128::from(MAX_STOCK) {
                return Err(StoreError::OutOfRange { units: d.stock });
            }
            d.stock = after as u64;
            Ok(d.stock)
        }))
    }

    fn stock(&self, sku: &Sku) -> StoreFuture<'_, StockReading> {
        ready(self.sale(sku).map(|s| {
            let d = lock(&s);
            StockReading {
                units: d.stock,
                epoch: Some(d.epoch.clone()),
            }
        }))
    }
}
