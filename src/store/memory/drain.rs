//! The memory store's drain steps ([`DrainSteps`]): the shared drain budget, pending counts
//! and operators' settings.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::{ready, MemoryStore};
use crate::store::{
    DrainLease, DrainSteps, Line, SaleControl, SaleControls, StoreFuture, TokenHold,
};
use crate::types::Sku;

impl MemoryStore {
    /// A hold that draws the next number of `sku`'s line (see [`crate::store::line`]).
    pub(super) fn draw_line_number(&self, sku: &Sku) -> TokenHold {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let line = &mut drains.entry(sku.clone()).or_default().line;
        line.admitted += 1;
        TokenHold::Held {
            number: line.admitted,
            cursor: line.cursor.floor() as u64,
        }
    }
}

impl DrainSteps for MemoryStore {
    fn share_pending(
        &self,
        sku: &Sku,
        me: &str,
        pending: u64,
        ttl: Duration,
    ) -> StoreFuture<'_, u64> {
        let mut all = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = all.entry(sku.clone()).or_default();
        let now = Instant::now();
        counts.retain(|_, (_, until)| *until > now);
        if pending > 0 && !ttl.is_zero() {
            counts.insert(me.to_owned(), (pending, now + ttl));
        } else {
            counts.remove(me);
        }
        let others = counts
            .iter()
            .filter(|(who, _)| who.as_str() != me)
            .map(|(_, (n, _))| n)
            .sum();
        ready(Ok(others))
    }

    fn lease_drain(&self, sku: &Sku, want: u32, rate: u32) -> StoreFuture<'_, DrainLease> {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let budget = drains.entry(sku.clone()).or_default();
        let now_us = self.epoch.elapsed().as_micros() as f64;
        let (lease, tat) =
            crate::store::lease::grant(budget.tat_us, now_us, budget.rate.unwrap_or(rate), want);
        budget.tat_us = Some(tat);
        ready(Ok(lease))
    }

    fn advance_line(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, Line> {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let budget = drains.entry(sku.clone()).or_default();
        let now_us = self.epoch.elapsed().as_micros() as f64;
        let rate = budget.rate.unwrap_or(rate);
        ready(Ok(crate::store::line::advance(
            &mut budget.line,
            now_us,
            rate,
        )))
    }

    fn set_drain_rate(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, ()> {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        drains.entry(sku.clone()).or_default().rate = Some(rate.max(1));
        ready(Ok(()))
    }

    fn set_control(&self, sku: &Sku, control: SaleControl) -> StoreFuture<'_, ()> {
        let mut controls = self.controls.lock().unwrap_or_else(PoisonError::into_inner);
        controls.entry(sku.clone()).or_default().apply(control);
        ready(Ok(()))
    }

    fn controls(&self, sku: &Sku) -> StoreFuture<'_, SaleControls> {
        let mut c = self
            .controls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sku)
            .copied()
            .unwrap_or_default();
        c.drain_rate = self
            .drains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sku)
            .and_then(|d| d.rate);
        ready(Ok(c))
    }
}
