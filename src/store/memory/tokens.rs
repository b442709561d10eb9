//! The memory store's token steps ([`TokenSteps`]): spending a token (the order step), its
//! replays and holds.

use std::time::{Duration, Instant, SystemTime};

use super::{lock, ready, MemoryStore, SpentToken};
use crate::store::{
    Entry, OrderState, Replay, Reservation, ReserveReply, ReserveRequest, Spend, StoreFuture,
    TicketRecord, TokenHold, TokenSteps, Unspent,
};
use crate::types::unix_millis;
use crate::types::{OrderId, Sku, TicketId, Token, UserId};

impl TokenSteps for MemoryStore {
    fn reserve(&self, req: &ReserveRequest) -> StoreFuture<'_, ReserveReply> {
        ready(self.reserve_now(req))
    }

    fn replay(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> StoreFuture<'_, Replay> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let now = Instant::now();
            d.sweep(now);
            let held = d.holds.get(token).map(|(ticket, _)| *ticket);
            match d.tokens.get(token) {
                Some((spent, _)) if spent.user == *user => {
                    Replay::Spent(d.replay_of(&spent.outcome))
                }
                Some(_) => Replay::Unknown,
                // Held by a queued request: that request decides it.
                None if held.is_some() => Replay::Queued(held.unwrap_or_else(TicketId::random)),
                None if unspent == Unspent::SpendAsSoldOut => {
                    let outcome = Reservation::SoldOut { remaining: d.stock };
                    let record = SpentToken {
                        user: user.clone(),
                        outcome: outcome.clone(),
                    };
                    let until = self.spent_until(token, now);
                    d.remember(*token, record, until);
                    Replay::Spent(ReserveReply {
                        outcome,
                        replayed: false,
                        state: None,
                    })
                }
                None => Replay::Unknown,
            }
        }))
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
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let now = Instant::now();
            d.sweep(now);
            match d.tokens.get(token) {
                Some((spent, _)) if spent.user == *user => {
                    return TokenHold::Spent(d.replay_of(&spent.outcome));
                }
                // Spent by another user: this request's own reserve step refuses it.
                Some(_) => return self.enter_line(sku, user, ticket, entry),
                None => {}
            }
            if let Some((held, _)) = d.holds.get(token) {
                return TokenHold::Queued(*held);
            }
            if let Entry::Prequeue(_) = entry {
                if let Some(first) = self.prequeue_place_of(sku, user) {
                    return TokenHold::PlaceTaken(first);
                }
            }
            let left = until_ms.saturating_sub(unix_millis(SystemTime::now()));
            let deadline = now + Duration::from_millis(left);
            d.holds.insert(*token, (*ticket, deadline));
            d.held_by.insert(*ticket, *token);
            d.hold_expiry.insert((deadline, *token));
            self.enter_line(sku, user, ticket, entry)
        }))
    }

    fn release_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
    ) -> StoreFuture<'_, ()> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            if d.holds.get(token).is_some_and(|(held, _)| held == ticket) {
                d.release(token);
            }
            self.leave_prequeue(sku, user, ticket);
        }))
    }

    fn spend_sold_out(&self, sku: &Sku, spends: &[Spend]) -> StoreFuture<'_, ()> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let now = Instant::now();
            d.sweep(now);
            for s in spends {
                let held = d.holds.get(&s.token).map(|(t, _)| *t);
                if d.tokens.contains_key(&s.token) || held.is_some_and(|t| t != s.ticket) {
                    continue;
                }
                if held.is_some() {
                    d.release(&s.token);
                }
                let record = SpentToken {
                    user: s.user.clone(),
                    outcome: Reservation::SoldOut { remaining: d.stock },
                };
                let until = self.spent_until(&s.token, now);
                d.remember(s.token, record, until);
            }
        }))
    }

    fn ticket_record(&self, sku: &Sku, ticket: &TicketId) -> StoreFuture<'_, Option<TicketRecord>> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            d.sweep(Instant::now());
            let token = d.held_by.get(ticket)?;
            Some(match d.tokens.get(token) {
                Some((spent, _)) => TicketRecord::Decided(d.replay_of(&spent.outcome)),
                None => TicketRecord::Queued,
            })
        }))
    }

    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>> {
        ready(
            self.sale(sku)
                .map(|sale| lock(&sale).orders.get(order_id).map(|o| o.state)),
        )
    }
}
