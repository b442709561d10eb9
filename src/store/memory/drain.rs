//! The memory store's drain steps ([`DrainSteps`]): the shared drain budget, pending counts
//! and operators' settings.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::{ready, DrainBudget, MemoryStore};
use crate::store::{
    DrainLease, DrainSteps, Entry, Line, Opening, SaleControl, SaleControls, Sealed, StoreFuture,
    TokenHold,
};
use crate::types::{Sku, TicketId, UserId};

impl MemoryStore {
    /// A hold's entry into `sku`'s line (see [`crate::store::line`]): the pre-queue while
    /// it is open and `entry` asks for it, else the next number (sealing the pre-queue).
    pub(super) fn enter_line(
        &self,
        sku: &Sku,
        user: &UserId,
        ticket: &TicketId,
        entry: Entry,
    ) -> TokenHold {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let budget = drains.entry(sku.clone()).or_default();
        if let (Entry::Prequeue(key), None) = (entry, budget.line.prequeue) {
            budget.prequeue.insert(user.clone(), (key, *ticket));
            return TokenHold::Prequeued;
        }
        budget.seal();
        let line = &mut budget.line;
        line.admitted += 1;
        TokenHold::Held {
            number: line.admitted,
            cursor: line.cursor.floor() as u64,
        }
    }
}

impl MemoryStore {
    /// The ticket holding `user`'s place in `sku`'s pre-queue, while it is not sealed.
    pub(super) fn prequeue_place_of(&self, sku: &Sku, user: &UserId) -> Option<TicketId> {
        let drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let budget = drains.get(sku)?;
        budget.line.prequeue.is_none().then_some(())?;
        budget.prequeue.get(user).map(|(_, ticket)| *ticket)
    }

    /// Gives up `user`'s place in `sku`'s pre-queue if `ticket` holds it and it is not sealed.
    pub(super) fn leave_prequeue(&self, sku: &Sku, user: &UserId, ticket: &TicketId) {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = drains.get_mut(sku) {
            let holds = budget.prequeue.get(user).is_some_and(|(_, t)| t == ticket);
            if budget.line.prequeue.is_none() && holds {
                budget.prequeue.remove(user);
            }
        }
    }
}

impl DrainBudget {
    /// Seals the pre-queue (see [`crate::store::line`]): its members' places are the order
    /// of their keys.
    fn seal(&mut self) -> Sealed {
        if self.line.prequeue.is_none() {
            let mut members: Vec<(u64, UserId)> = std::mem::take(&mut self.prequeue)
                .into_iter()
                .map(|(user, (key, _))| (key, user))
                .collect();
            members.sort_unstable();
            self.places = members
                .into_iter()
                .zip(1..)
                .map(|((_, user), place)| (user, place))
                .collect();
        }
        self.line.seal(self.places.len() as u64)
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

    fn open_prequeue(&self, sku: &Sku, users: &[UserId], keep: u64) -> StoreFuture<'_, Opening> {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let budget = drains.entry(sku.clone()).or_default();
        budget.seal();
        budget.line.keep(keep);
        let places = users
            .iter()
            .map(|u| budget.places.get(u).copied())
            .collect();
        let line = &budget.line;
        ready(Ok(Opening {
            sealed: line.prequeue.unwrap_or_default(),
            places,
            cursor: line.cursor.floor() as u64,
            admitted: line.admitted,
        }))
    }

    fn set_drain_rate(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, ()> {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        drains.entry(sku.clone()).or_default().rate = Some(rate.max(1));
        ready(Ok(()))
    }

    fn steer_drain_rate(&self, sku: &Sku, from: u32, to: u32) -> StoreFuture<'_, bool> {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let d = drains.entry(sku.clone()).or_default();
        let steered = d.rate.is_none_or(|now| now == from);
        if steered {
            d.rate = Some(to.max(1));
        }
        ready(Ok(steered))
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
