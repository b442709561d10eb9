//! A sale's bounded FIFO queue: lock-free, non-blocking push at admission, pop by the
//! sale's drain task. Overflow is refused, never buffered.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use tokio::sync::{oneshot, Notify};

use crate::ticket::TicketStatus;
use crate::types::{TicketId, Token, UserId};

/// An admitted order request waiting its turn.
#[derive(Debug)]
pub struct QueueItem {
    /// Admission sequence number within the sale.
    pub seq: u64,
    /// The ticket that follows it.
    pub ticket: TicketId,
    /// The buyer.
    pub user: UserId,
    /// The buyer's token.
    pub token: Token,
    /// Units asked for.
    pub quantity: u32,
    /// When it was admitted.
    pub admitted_at: Instant,
    /// Where a waiting request hears the outcome (wait mode); `None` in async mode.
    pub reply: Option<oneshot::Sender<TicketStatus>>,
}

/// The queue of one sale.
pub struct SaleQueue {
    items: ArrayQueue<QueueItem>,
    /// The capacity in force, at most the allocated slots; operators may change it live.
    limit: AtomicUsize,
    /// Admission sequence numbers handed out so far.
    admitted: AtomicU64,
    /// Items taken out by the drain so far.
    released: AtomicU64,
    /// Items in the queue (the ArrayQueue's own count, kept here to reserve a slot before
    /// taking a sequence number, so numbers have no gaps).
    len: AtomicUsize,
    ready: Notify,
}

impl SaleQueue {
    /// Slots allocated per unit of configured capacity: room to raise it live.
    pub const HEADROOM: usize = 4;

    /// An empty queue holding at most `capacity` items; [`HEADROOM`](Self::HEADROOM) times
    /// as many slots are allocated so the capacity can be raised live.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            items: ArrayQueue::new(capacity.saturating_mul(Self::HEADROOM)),
            limit: AtomicUsize::new(capacity),
            admitted: AtomicU64::new(0),
            released: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            ready: Notify::new(),
        }
    }

    /// The most items it holds now.
    pub fn capacity(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// The most the capacity can be raised to.
    pub fn max_capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Changes the capacity, within 1..=[`max_capacity`](Self::max_capacity); lowering it
    /// below what is queued refuses new items until the queue drains below it.
    pub fn set_capacity(&self, capacity: usize) -> Result<(), usize> {
        if capacity == 0 || capacity > self.max_capacity() {
            return Err(self.max_capacity());
        }
        self.limit.store(capacity, Ordering::Release);
        Ok(())
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves a slot and a sequence number, or `None` when full. The caller must
    /// [`push`](Self::push) an item with that number.
    pub fn reserve(&self) -> Option<u64> {
        let cap = self.capacity();
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(self.admitted.fetch_add(1, Ordering::AcqRel))
    }

    /// Gives back a slot [`reserve`](Self::reserve) granted without pushing; its sequence
    /// number counts as released so later positions stay exact.
    pub fn cancel_reservation(&self) {
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.released.fetch_add(1, Ordering::AcqRel);
    }

    /// Enqueues an item whose slot [`reserve`](Self::reserve) granted.
    pub fn push(&self, item: QueueItem) {
        // A reserved slot guarantees room; if the invariant were ever broken the item is
        // answered rather than lost.
        if let Err(item) = self.items.push(item) {
            self.len.fetch_sub(1, Ordering::AcqRel);
            if let Some(reply) = item.reply {
                let _ = reply.send(TicketStatus::Refused(crate::ticket::RefusalCode::QueueFull));
            }
            return;
        }
        self.ready.notify_one();
    }

    /// Takes the oldest item, if any.
    pub fn pop(&self) -> Option<QueueItem> {
        let item = self.items.pop()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.released.fetch_add(1, Ordering::AcqRel);
        Some(item)
    }

    /// Waits until an item may be there (a push happened since the last wait).
    pub async fn wait_ready(&self) {
        self.ready.notified().await;
    }

    /// 1-based position of the item with sequence number `seq`, if it is still queued.
    pub fn position(&self, seq: u64) -> Option<u64> {
        let released = self.released.load(Ordering::Acquire);
        (seq >= released).then(|| seq - released + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64) -> QueueItem {
        QueueItem {
            seq,
            ticket: TicketId::random(),
            user: UserId::parse("u").expect("user"),
            token: Token::random(),
            quantity: 1,
            admitted_at: Instant::now(),
            reply: None,
        }
    }

    #[test]
    fn fifo_bounded_and_positions() {
        let q = SaleQueue::new(3);
        for expected in 0..3 {
            let seq = q.reserve().expect("room");
            assert_eq!(seq, expected);
            q.push(item(seq));
        }
        assert!(q.reserve().is_none(), "full queue refuses");
        assert_eq!(q.len(), 3);
        assert_eq!(q.position(2), Some(3));
        assert_eq!(q.pop().map(|i| i.seq), Some(0));
        assert_eq!(q.position(2), Some(2));
        assert_eq!(q.position(0), None, "released");
        assert_eq!(q.reserve(), Some(3), "a freed slot is reusable");
        q.push(item(3));
        let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|i| i.seq)).collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn capacity_changes_live_within_the_allocation() {
        let q = SaleQueue::new(2);
        assert_eq!(q.max_capacity(), 2 * SaleQueue::HEADROOM);
        for _ in 0..2 {
            let seq = q.reserve().expect("room");
            q.push(item(seq));
        }
        assert!(q.reserve().is_none());
        q.set_capacity(3).expect("raise");
        assert!(q.reserve().is_some(), "raised capacity admits one more");
        assert!(q.set_capacity(0).is_err());
        assert!(q.set_capacity(q.max_capacity() + 1).is_err());
        q.set_capacity(1).expect("lower");
        assert!(
            q.reserve().is_none(),
            "lowered below the queued count: refused"
        );
    }
}
