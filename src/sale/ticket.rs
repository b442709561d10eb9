//! Tickets: how the owner of an admitted request follows it from queued to its outcome.
//!
//! Sharded maps (no lock shared by all requests), bounded in count, and finished tickets
//! forgotten after `queue.ticket_ttl`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::outcome::Outcome;
use crate::types::{OrderId, Sku, TicketId, Token, UserId};

const SHARDS: usize = 32;

/// Where a ticket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketStatus {
    /// In the sale's pre-queue: its place is drawn at the opening.
    Prequeued,
    /// Waiting in the sale's queue.
    Queued,
    /// Taken by an order worker.
    Processing,
    /// Ended (a reserved order may still move on by delivery).
    Done(Outcome),
}

impl TicketStatus {
    /// True once the ticket will not change any more (or changes only by delivery).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    /// True when a resubmission of the same token must get this answer again: the store
    /// decided it, or the request is still on its way.
    pub fn binds_token(&self) -> bool {
        match self {
            Self::Prequeued | Self::Queued | Self::Processing => true,
            Self::Done(o) => o.binds_token(),
        }
    }

    /// The order it made, if any.
    fn order(&self) -> Option<OrderId> {
        match self {
            Self::Prequeued | Self::Queued | Self::Processing => None,
            Self::Done(o) => o.order(),
        }
    }
}

/// One ticket's record.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The sale.
    pub sku: Sku,
    /// Its admission sequence number in that sale, on this instance.
    pub seq: u64,
    /// Its number in the fleet's line of the sale (with a shared store; see
    /// [`crate::store::line`]).
    pub line: Option<u64>,
    /// Who it belongs to.
    pub user: UserId,
    /// The token it spends.
    pub token: Token,
    /// Where it is.
    pub status: TicketStatus,
    finished_at: Option<Instant>,
}

#[derive(Default)]
struct Shard {
    tickets: HashMap<TicketId, Ticket>,
    /// Creation order, for forgetting the oldest finished tickets first.
    order: VecDeque<TicketId>,
    by_order: HashMap<OrderId, TicketId>,
    by_token: HashMap<Token, TicketId>,
    /// How many of `tickets` are finished: a full shard has room exactly when one is.
    finished: usize,
    /// Tickets whose request holds its token in a shared store and is on its way into
    /// the queue (not opened yet).
    arriving: std::collections::HashSet<TicketId>,
}

/// All tickets of this gateway.
pub struct TicketBook {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    per_shard: usize,
    ttl: Duration,
}

impl TicketBook {
    /// How long finished tickets are kept.
    pub fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    /// A book holding at most about `max` tickets, finished ones for `ttl`.
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            per_shard: max.div_ceil(SHARDS).max(1),
            ttl,
        }
    }

    fn shard_of<K: std::hash::Hash>(&self, key: &K) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// True when a ticket `id` could be opened now: its shard has room, or a finished
    /// ticket to forget. Admission asks before it takes a queue number, so a full book
    /// refuses without touching the queue (a race to the last room is still refused by
    /// [`Self::open`]).
    pub fn has_room(&self, id: &TicketId) -> bool {
        let shard = self.shard_of(id);
        shard.tickets.len() < self.per_shard || shard.finished > 0
    }

    /// Records a new queued ticket; `false` when the book is full of unfinished tickets.
    pub fn open(&self, id: TicketId, sku: Sku, seq: u64, user: UserId, token: Token) -> bool {
        let now = Instant::now();
        let mut shard = self.shard_of(&id);
        let mut evicted = Vec::new();
        self.expire(&mut shard, now, &mut evicted);
        if shard.tickets.len() >= self.per_shard
            && !self.evict_oldest_finished(&mut shard, &mut evicted)
        {
            drop(shard);
            self.unlink(evicted);
            return false;
        }
        shard.tickets.insert(
            id,
            Ticket {
                sku,
                seq,
                line: None,
                user,
                token,
                status: TicketStatus::Queued,
                finished_at: None,
            },
        );
        shard.order.push_back(id);
        drop(shard);
        self.unlink(evicted);
        self.shard_of(&token).by_token.insert(token, id);
        true
    }

    /// Records ticket `id`'s number in the fleet's line.
    pub fn set_line(&self, id: &TicketId, line: u64) {
        if let Some(t) = self.shard_of(id).tickets.get_mut(id) {
            t.line = Some(line);
        }
    }

    /// Records a ticket finished at once with `outcome` (a token's recorded outcome, told
    /// again): the token's next submission, and a poll of the ticket, find it here. Not
    /// recorded when the book is full of unfinished tickets.
    pub fn remember(&self, id: TicketId, sku: Sku, user: UserId, token: Token, outcome: Outcome) {
        if self.open(id, sku, 0, user, token) {
            self.update(&id, TicketStatus::Done(outcome));
        }
    }

    /// Moves a ticket to `status`, linking it to its order when it has one.
    pub fn update(&self, id: &TicketId, status: TicketStatus) {
        let order = status.order();
        {
            let mut shard = self.shard_of(id);
            let Some(t) = shard.tickets.get_mut(id) else {
                return;
            };
            let finishes = status.is_final() && t.finished_at.is_none();
            if finishes {
                t.finished_at = Some(Instant::now());
            }
            t.status = status;
            if finishes {
                shard.finished += 1;
            }
        }
        if let Some(order) = order {
            self.shard_of(&order).by_order.insert(order, *id);
        }
    }

    /// Moves the ticket of `order` to `outcome` (delivery outcomes).
    pub fn update_by_order(&self, order: &OrderId, outcome: Outcome) {
        let id = self.shard_of(order).by_order.get(order).copied();
        if let Some(id) = id {
            self.update(&id, TicketStatus::Done(outcome));
        }
    }

    /// The ticket that spends `token`, if this gateway remembers one.
    pub fn by_token(&self, token: &Token) -> Option<(TicketId, Ticket)> {
        let id = *self.shard_of(token).by_token.get(token)?;
        self.get(&id).map(|t| (id, t))
    }

    /// A ticket's record, if known and not expired.
    /// Marks (true) or unmarks the request of ticket `id` as on its way into the queue.
    pub fn set_arriving(&self, id: &TicketId, arriving: bool) {
        let mut shard = self.shard_of(id);
        if arriving {
            shard.arriving.insert(*id);
        } else {
            shard.arriving.remove(id);
        }
    }

    /// True while the request of ticket `id` is on its way into the queue.
    pub fn is_arriving(&self, id: &TicketId) -> bool {
        self.shard_of(id).arriving.contains(id)
    }

    /// The ticket `id`, unless unknown or forgotten.
    pub fn get(&self, id: &TicketId) -> Option<Ticket> {
        let shard = self.shard_of(id);
        let t = shard.tickets.get(id)?;
        let expired = t.finished_at.is_some_and(|f| f.elapsed() > self.ttl);
        (!expired).then(|| t.clone())
    }

    /// Tickets held right now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .tickets
                    .len()
            })
            .sum()
    }

    /// True when no ticket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops finished tickets past their TTL from the front of the creation order.
    fn expire(&self, shard: &mut Shard, now: Instant, evicted: &mut Vec<Evicted>) {
        while let Some(id) = shard.order.front().copied() {
            match shard.tickets.get(&id) {
                None => {
                    shard.order.pop_front();
                }
                Some(t)
                    if t.finished_at
                        .is_some_and(|f| now.duration_since(f) > self.ttl) =>
                {
                    shard.order.pop_front();
                    if let Some(t) = shard.tickets.remove(&id) {
                        shard.finished -= 1;
                        evicted.push(Evicted::of(id, &t));
                    }
                }
                // The oldest is still queued or fresh: later ones are younger.
                Some(_) => break,
            }
        }
    }

    /// Forgets the oldest finished ticket to make room; `false` if every ticket is unfinished.
    fn evict_oldest_finished(&self, shard: &mut Shard, evicted: &mut Vec<Evicted>) -> bool {
        // A shard full of unfinished tickets is refused without a scan.
        if shard.finished == 0 {
            return false;
        }
        let Some(pos) = shard.order.iter().position(|id| {
            shard
                .tickets
                .get(id)
                .is_none_or(|t| t.finished_at.is_some())
        }) else {
            return false;
        };
        if let Some(id) = shard.order.remove(pos) {
            if let Some(t) = shard.tickets.remove(&id) {
                shard.finished -= 1;
                evicted.push(Evicted::of(id, &t));
            }
        }
        true
    }

    /// Drops the order and token links of forgotten tickets (taken after the ticket's shard
    /// lock is released: links live in other shards).
    fn unlink(&self, evicted: Vec<Evicted>) {
        for e in evicted {
            if let Some(o) = e.order {
                self.shard_of(&o).by_order.remove(&o);
            }
            let mut shard = self.shard_of(&e.token);
            if shard.by_token.get(&e.token) == Some(&e.ticket) {
                shard.by_token.remove(&e.token);
            }
        }
    }
}

/// What a forgotten ticket leaves behind in other shards.
struct Evicted {
    ticket: TicketId,
    token: Token,
    order: Option<OrderId>,
}

impl Evicted {
    fn of(ticket: TicketId, t: &Ticket) -> Self {
        Self {
            ticket,
            token: t.token,
            order: t.status.order(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("u").expect("user")
    }

    #[test]
    fn lifecycle_and_order_link() {
        let book = TicketBook::new(100, Duration::from_secs(60));
        let id = TicketId::random();
        assert!(book.open(id, Sku::new("a"), 0, user(), Token::random()));
        assert_eq!(book.get(&id).map(|t| t.status), Some(TicketStatus::Queued));
        let order = OrderId::random();
        book.update(&id, TicketStatus::Done(Outcome::Reserved(order)));
        book.update_by_order(&order, Outcome::Confirmed(order));
        assert_eq!(
            book.get(&id).map(|t| t.status),
            Some(TicketStatus::Done(Outcome::Confirmed(order)))
        );
        assert!(book.get(&TicketId::random()).is_none());
    }

    #[test]
    fn bounded_finished_tickets_make_room_unfinished_do_not() {
        let book = TicketBook::new(SHARDS, Duration::from_secs(3600));
        let mut open = Vec::new();
        let mut refused = 0;
        // One slot per shard: unfinished tickets fill them and further ones are refused.
        for _ in 0..20 * SHARDS {
            let id = TicketId::random();
            if book.open(id, Sku::new("a"), 0, user(), Token::random()) {
                open.push(id);
            } else {
                refused += 1;
            }
        }
        assert!(book.len() <= SHARDS, "held {}", book.len());
        assert!(refused > 0);
        // Finish them all: now new tickets evict old ones instead of being refused.
        for id in &open {
            book.update(id, TicketStatus::Done(Outcome::SoldOut));
        }
        for _ in 0..100 {
            let id = TicketId::random();
            assert!(book.open(id, Sku::new("a"), 0, user(), Token::random()));
            book.update(&id, TicketStatus::Done(Outcome::SoldOut));
        }
        assert!(book.len() <= SHARDS);
    }

    #[test]
    fn room_follows_finished_tickets_through_eviction_and_expiry() {
        let book = TicketBook::new(SHARDS, Duration::from_secs(3600));
        // Fill every shard with one unfinished ticket (about: ids hash where they will).
        let mut open = Vec::new();
        for _ in 0..40 * SHARDS {
            let id = TicketId::random();
            if book.open(id, Sku::new("a"), 0, user(), Token::random()) {
                open.push(id);
            }
        }
        let probe = TicketId::random();
        let full = !book.has_room(&probe);
        // Finishing the ticket in the probe's shard makes room there, and opening one
        // there takes that room again.
        for id in &open {
            book.update(id, TicketStatus::Done(Outcome::SoldOut));
        }
        assert!(book.has_room(&probe));
        assert!(book.open(probe, Sku::new("a"), 0, user(), Token::random()));
        assert_eq!(
            !book.has_room(&probe),
            full,
            "the evicted finished ticket is gone"
        );
        let zero = TicketBook::new(SHARDS, Duration::ZERO);
        let id = TicketId::random();
        assert!(zero.open(id, Sku::new("a"), 0, user(), Token::random()));
        zero.update(&id, TicketStatus::Done(Outcome::Duplicate));
        // Expired at the next open in that shard: its count goes with it.
        let gone = (0..1_000_000).any(|_| zero.get(&id).is_none());
        assert!(gone);
        assert!(zero.has_room(&id));
    }

    #[test]
    fn finished_tickets_expire() {
        let book = TicketBook::new(100, Duration::ZERO);
        let id = TicketId::random();
        assert!(book.open(id, Sku::new("a"), 0, user(), Token::random()));
        book.update(&id, TicketStatus::Done(Outcome::Duplicate));
        // Any time at all past finishing is past a zero TTL.
        let gone = (0..1_000_000).any(|_| book.get(&id).is_none());
        assert!(gone, "a finished ticket outlived its TTL");
    }
}
