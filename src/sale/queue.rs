//! A sale's bounded FIFO queue: a ring of slots indexed by admission sequence number.
//! Admission takes a number and the slot it names, then fills it; the sale's drain takes
//! slots in number order, waiting for one still being filled. So the drain releases
//! requests exactly in admission order (invariant 7), however admissions race, and a
//! position is the distance from the drain's head. Overflow is refused, never buffered.
//!
//! No lock is shared by all requests: the counters are atomics and each slot has its own
//! mutex, which at most the one admission filling it and the drain ever touch.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{oneshot, Notify};

use super::outcome::Outcome;
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
    /// Its number in the fleet's line (with a shared store): the drain releases it once
    /// the line's cursor has passed it.
    pub line: Option<u64>,
    /// The wait it was told at admission, in milliseconds.
    pub promised_ms: u64,
    /// When it was admitted.
    pub admitted_at: Instant,
    /// Where a waiting request hears the outcome (wait mode); `None` in async mode.
    pub reply: Option<oneshot::Sender<Outcome>>,
    /// Its token is held in the shared store for its ticket (see
    /// [`crate::store::Store::hold_token`]).
    pub held: bool,
}

/// What one slot of the ring holds, for the sequence number it was last given.
#[derive(Debug, Default)]
enum Slot {
    /// Nothing yet (or taken by the drain).
    #[default]
    Empty,
    /// An admitted request.
    Filled(QueueItem),
    /// A number given back unfilled: the drain passes over it.
    Cancelled(u64),
}

/// What [`SaleQueue::pop`] found at the head.
#[derive(Debug)]
pub enum Head {
    /// The next request in admission order.
    Item(QueueItem),
    /// The next number was taken but its request is still being filled in: wait for
    /// [`SaleQueue::wait_ready`].
    Filling,
    /// Nothing is queued.
    Empty,
    /// The next request is number `.0` in the fleet's line, which the cursor has not
    /// passed yet: it stays at the head.
    Later(u64),
}

/// The queue of one sale.
pub struct SaleQueue {
    slots: Box<[Mutex<Slot>]>,
    /// The capacity in force, at most the allocated slots; operators may change it live.
    limit: AtomicUsize,
    /// The next admission sequence number.
    tail: AtomicU64,
    /// The next sequence number the drain takes (only the drain moves it).
    head: AtomicU64,
    /// Places taken (numbered or about to be), neither given back nor passed by the
    /// drain: what the capacity bounds.
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
        let slots = (0..capacity.saturating_mul(Self::HEADROOM))
            .map(|_| Mutex::new(Slot::Empty))
            .collect();
        Self {
            slots,
            limit: AtomicUsize::new(capacity),
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
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
        self.slots.len()
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

    /// Items waiting now (numbers taken and not passed by the drain).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// True when it holds its capacity (a hint: [`Self::reserve`] decides).
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, seq: u64) -> std::sync::MutexGuard<'_, Slot> {
        let i = (seq % self.slots.len() as u64) as usize;
        // A slot is only ever replaced whole: a poisoned one still holds a valid value.
        self.slots[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves a slot and its sequence number, or `None` when full. The caller must
    /// [`push`](Self::push) an item with that number or
    /// [`cancel_reservation`](Self::cancel_reservation) it.
    pub fn reserve(&self) -> Option<u64> {
        if !self.take_place() {
            return None;
        }
        self.number_for_place()
    }

    /// Takes a place within the capacity, without a number yet; `false` when full. The
    /// caller must turn it into a number ([`number_for_place`](Self::number_for_place)) or
    /// [`give_back_place`](Self::give_back_place). A place is taken before anything slow
    /// (a shared store's token hold), so a full queue refuses at the cost of one atomic;
    /// the number, which fixes the admission order, is taken after.
    pub fn take_place(&self) -> bool {
        let cap = self.capacity();
        // SeqCst: a stopping drain that reads `len` after raising the sale's stop flag
        // sees this place, or this admission sees the flag (see `Sale::stop`).
        self.len
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a place [`take_place`](Self::take_place) took and never numbered.
    pub fn give_back_place(&self) {
        self.len.fetch_sub(1, Ordering::SeqCst);
        // A stopping drain waits for every place to be numbered or given back.
        self.ready.notify_one();
    }

    /// The sequence number of a place [`take_place`](Self::take_place) took; `None` (the
    /// place given back) when the ring has no slot free.
    pub fn number_for_place(&self) -> Option<u64> {
        // Numbers given back free their place in `len` at once, but their ring slots only
        // when the drain passes them: a number is granted only while the ring has a slot
        // the drain has passed (the head only moves on, so the check holds once won).
        let ring = self.slots.len() as u64;
        let mut tail = self.tail.load(Ordering::Acquire);
        loop {
            if tail - self.head.load(Ordering::Acquire) >= ring {
                self.give_back_place();
                return None;
            }
            match self.tail.compare_exchange_weak(
                tail,
                tail + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(tail),
                Err(now) => tail = now,
            }
        }
    }

    /// Gives back the number `seq` [`reserve`](Self::reserve) granted, unfilled: its place
    /// counts no more at once (a held drain must not leave it taken), and the drain passes
    /// over its slot. Until then it counts in the positions behind it.
    pub fn cancel_reservation(&self, seq: u64) {
        *self.slot(seq) = Slot::Cancelled(seq);
        self.len.fetch_sub(1, Ordering::SeqCst);
        self.ready.notify_one();
    }

    /// Fills the slot [`reserve`](Self::reserve) granted for `item.seq`.
    pub fn push(&self, item: QueueItem) {
        let seq = item.seq;
        *self.slot(seq) = Slot::Filled(item);
        self.ready.notify_one();
    }

    /// Takes the request at the head, in admission order, passing over numbers given
    /// back. Only the sale's drain calls it.
    pub fn pop(&self) -> Head {
        self.pop_through(None)
    }

    /// [`pop`](Self::pop), but with a `cursor` only a request whose number in the fleet's
    /// line it has passed (or one without a number): else [`Head::Later`].
    pub fn pop_through(&self, cursor: Option<u64>) -> Head {
        loop {
            let head = self.head.load(Ordering::Acquire);
            if head == self.tail.load(Ordering::Acquire) {
                return Head::Empty;
            }
            let taken = {
                let mut slot = self.slot(head);
                match &*slot {
                    Slot::Filled(QueueItem {
                        seq, line: Some(n), ..
                    }) if *seq == head && cursor.is_some_and(|c| *n > c) => return Head::Later(*n),
                    Slot::Filled(item) if item.seq == head => Some(std::mem::take(&mut *slot)),
                    Slot::Cancelled(seq) if *seq == head => {
                        *slot = Slot::Empty;
                        None
                    }
                    // Its admission has the number but has not filled the slot yet.
                    _ => return Head::Filling,
                }
            };
            self.head.store(head + 1, Ordering::Release);
            // A given-back number left `len` when it was given back.
            if let Some(Slot::Filled(item)) = taken {
                self.len.fetch_sub(1, Ordering::AcqRel);
                return Head::Item(item);
            }
        }
    }

    /// Passes over numbers given back at the head, so their ring slots are free again even
    /// while nothing is queued behind them. Only the sale's drain calls it.
    pub fn pass_given_back(&self) {
        loop {
            let head = self.head.load(Ordering::Acquire);
            if head == self.tail.load(Ordering::Acquire) {
                return;
            }
            {
                let mut slot = self.slot(head);
                match &*slot {
                    Slot::Cancelled(seq) if *seq == head => *slot = Slot::Empty,
                    _ => return,
                }
            }
            self.head.store(head + 1, Ordering::Release);
        }
    }

    /// Wakes the drain: items it may release came from elsewhere (the pre-queue, ranked).
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Waits until an item may be there (a push or a cancellation since the last wait).
    pub async fn wait_ready(&self) {
        self.ready.notified().await;
    }

    /// 1-based position of the item with sequence number `seq`, if it is still queued.
    /// Numbers given back ahead of it count until the drain passes them, but never past
    /// what is queued.
    pub fn position(&self, seq: u64) -> Option<u64> {
        let head = self.head.load(Ordering::Acquire);
        let queued = self.len() as u64;
        (seq >= head).then(|| (seq - head).saturating_add(1).min(queued.max(1)))
    }
}

#[cfg(test)]
impl QueueItem {
    /// A request numbered `seq`, for the tests of the queue and the pre-queue.
    pub(crate) fn for_test(seq: u64) -> Self {
        Self {
            seq,
            ticket: TicketId::random(),
            user: UserId::parse("u").expect("user"),
            token: Token::random(),
            quantity: 1,
            line: None,
            promised_ms: 0,
            admitted_at: Instant::now(),
            reply: None,
            held: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64) -> QueueItem {
        QueueItem::for_test(seq)
    }

    fn pop_seq(q: &SaleQueue) -> Option<u64> {
        match q.pop() {
            Head::Item(i) => Some(i.seq),
            _ => None,
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
        assert_eq!(pop_seq(&q), Some(0));
        assert_eq!(q.position(2), Some(2));
        assert_eq!(q.position(0), None, "released");
        assert_eq!(q.reserve(), Some(3), "a freed slot is reusable");
        q.push(item(3));
        let order: Vec<u64> = std::iter::from_fn(|| pop_seq(&q)).collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(q.is_empty());
        assert!(matches!(q.pop(), Head::Empty));
    }

    #[test]
    fn admissions_that_fill_out_of_order_drain_in_admission_order() {
        let q = SaleQueue::new(8);
        let (a, b) = (q.reserve().expect("room"), q.reserve().expect("room"));
        // The later admission fills its slot first: the drain waits for the earlier one.
        q.push(item(b));
        assert!(matches!(q.pop(), Head::Filling));
        assert_eq!(q.position(a), Some(1));
        assert_eq!(q.position(b), Some(2));
        q.push(item(a));
        assert_eq!(pop_seq(&q), Some(a));
        assert_eq!(pop_seq(&q), Some(b));
    }

    #[test]
    fn a_cancelled_number_is_passed_over_and_positions_never_run_low() {
        let q = SaleQueue::new(8);
        let (a, b, c) = (
            q.reserve().expect("room"),
            q.reserve().expect("room"),
            q.reserve().expect("room"),
        );
        q.push(item(a));
        q.cancel_reservation(b);
        q.push(item(c));
        assert_eq!(q.position(a), Some(1), "ahead of the cancelled one: exact");
        assert_eq!(pop_seq(&q), Some(a));
        assert_eq!(pop_seq(&q), Some(c), "the cancelled number is passed over");
        assert!(q.is_empty());
        assert_eq!(q.reserve(), Some(3));
    }

    #[test]
    fn a_number_given_back_frees_its_place_at_once_and_the_ring_is_never_overrun() {
        let q = SaleQueue::new(2);
        let first = q.reserve().expect("room");
        q.push(item(first));
        // The drain is held (nothing pops): give numbers back again and again.
        let mut given_back = 0;
        while let Some(seq) = q.reserve() {
            assert_eq!(q.len(), 2);
            q.cancel_reservation(seq);
            assert_eq!(q.len(), 1, "a number given back holds no place");
            given_back += 1;
            assert!(
                given_back < 100,
                "the ring must bound the numbers outstanding"
            );
        }
        // Every slot of the ring is outstanding now; the one queued item is still first.
        assert_eq!(given_back, q.max_capacity() - 1);
        assert_eq!(pop_seq(&q), Some(first));
        assert!(q.is_empty());
        let seq = q
            .reserve()
            .expect("the ring is free again once the drain passed");
        q.push(item(seq));
        assert_eq!(pop_seq(&q), Some(seq));
    }

    /// Adversarial review: numbers given back with nothing queued behind them kept their
    /// ring slots until the next item, which could then never come.
    #[test]
    fn the_drain_passes_numbers_given_back_with_nothing_behind_them() {
        let q = SaleQueue::new(1);
        while let Some(seq) = q.reserve() {
            q.cancel_reservation(seq);
        }
        assert!(q.is_empty(), "nothing is queued, yet the ring is spent");
        q.pass_given_back();
        let seq = q.reserve().expect("the ring is free again");
        q.push(item(seq));
        assert_eq!(pop_seq(&q), Some(seq));
    }

    /// Adversarial review: positions counted numbers given back, up to four times the
    /// capacity, even on an empty queue.
    #[test]
    fn given_back_numbers_never_push_a_position_past_what_is_queued() {
        let q = SaleQueue::new(4);
        let first = q.reserve().expect("room");
        q.push(item(first));
        for _ in 0..3 {
            let seq = q.reserve().expect("room");
            q.cancel_reservation(seq);
        }
        let last = q.reserve().expect("room");
        q.push(item(last));
        assert_eq!(q.len(), 2);
        assert_eq!(q.position(first), Some(1));
        assert_eq!(q.position(last), Some(2), "two are queued: it is second");
    }

    #[test]
    fn a_head_the_line_cursor_has_not_passed_stays() {
        let q = SaleQueue::new(4);
        let seq = q.reserve().expect("room");
        q.push(QueueItem {
            line: Some(7),
            ..item(seq)
        });
        assert!(matches!(q.pop_through(Some(6)), Head::Later(7)));
        assert_eq!(q.len(), 1, "still queued");
        assert!(matches!(q.pop_through(Some(7)), Head::Item(i) if i.seq == seq));
    }

    #[test]
    fn a_place_counts_against_the_capacity_before_it_is_numbered() {
        let q = SaleQueue::new(2);
        assert!(q.take_place());
        assert!(q.take_place());
        assert!(!q.take_place(), "two places taken: full");
        assert!(q.reserve().is_none());
        q.give_back_place();
        assert_eq!(q.len(), 1);
        let seq = q.number_for_place().expect("a slot");
        q.push(item(seq));
        assert_eq!(pop_seq(&q), Some(seq));
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

    #[test]
    fn racing_admissions_leave_in_the_order_of_their_numbers() {
        let q = std::sync::Arc::new(SaleQueue::new(64));
        let producers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut pushed = 0;
                    while pushed < 2_000 {
                        if let Some(seq) = q.reserve() {
                            q.push(item(seq));
                            pushed += 1;
                        } else {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = 0;
        while next < 8_000 {
            match q.pop() {
                Head::Item(i) => {
                    assert_eq!(i.seq, next, "admission order");
                    next += 1;
                }
                Head::Filling | Head::Empty | Head::Later(_) => std::thread::yield_now(),
            }
        }
        for p in producers {
            p.join().expect("producer");
        }
        assert!(q.is_empty());
    }

    #[test]
    fn the_ring_wraps_around_many_times() {
        let q = SaleQueue::new(2);
        for round in 0..100u64 {
            let (a, b) = (q.reserve().expect("room"), q.reserve().expect("room"));
            assert_eq!((a, b), (2 * round, 2 * round + 1));
            q.push(item(b));
            q.push(item(a));
            assert_eq!((pop_seq(&q), pop_seq(&q)), (Some(a), Some(b)));
        }
    }
}
