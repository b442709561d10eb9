//! A sale's pre-queue: from `starts_at − prequeue` until the opening, orders join it
//! (answered `prequeued`, whatever the response mode) instead of hammering at the opening
//! second. At the opening it is put in one uniform random order — each member drew a
//! random key from a CSPRNG when it joined, and the keys' order is the permutation; with a
//! shared store the keys live in the store, so the whole fleet's pre-queue is one
//! permutation (see [`crate::store::line`]) — ahead of everyone who arrives later.
//!
//! Members are held here, outside the queue's ring (whose order is arrival order), but
//! each keeps the place it took within the queue's capacity until the drain releases it.
//! The sale's drain opens the pre-queue ([`super::drain`]), ranks its members and then
//! releases them by rank before anything in the ring.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::queue::{Head, QueueItem};
use crate::types::{TicketId, UserId};

/// A member of the pre-queue not ranked yet, with the random key that will rank it.
#[derive(Debug)]
pub struct Member {
    /// Its random key (53 bits, so that a store keeping it as a double keeps it exactly).
    pub key: u64,
    /// The request.
    pub item: QueueItem,
}

#[derive(Default)]
struct Members {
    /// Joined and not ranked yet.
    joined: Vec<Member>,
    /// Ranked, by number in the line (the fleet's, or this instance's shuffled order).
    ranked: BTreeMap<u64, QueueItem>,
    /// Members the store could not rank (it lost the pre-queue): released in local order
    /// after the ranked ones.
    unnumbered: VecDeque<QueueItem>,
    /// The last number this instance gave a member (without a shared store).
    numbered: u64,
    /// The ticket holding each user's place (without a shared store: one place a user).
    users: HashMap<UserId, TicketId>,
}

/// One sale's pre-queue (empty and never used for a sale without one).
pub struct PreQueue {
    members: Mutex<Members>,
    /// Members not released yet (joined, ranked or not).
    waiting: AtomicUsize,
    /// Members not ranked yet.
    unranked: AtomicUsize,
    /// Told of every join, for the opening to rank members that join after it.
    joined: Notify,
    /// Told when the store says the pre-queue is sealed before this instance's clock says
    /// the sale opened (another instance's clock runs ahead).
    sealed: Notify,
}

impl Default for PreQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl PreQueue {
    /// An empty pre-queue (when it opens is the sale's [`super::Terms::prequeue_opens`]).
    pub fn new() -> Self {
        Self {
            members: Mutex::default(),
            waiting: AtomicUsize::new(0),
            unranked: AtomicUsize::new(0),
            joined: Notify::new(),
            sealed: Notify::new(),
        }
    }

    /// A fresh random key for a member: 53 bits from the thread's CSPRNG (ChaCha).
    pub fn draw_key() -> u64 {
        rand::random::<u64>() >> 11
    }

    fn lock(&self) -> MutexGuard<'_, Members> {
        // Only ever changed whole: a poisoned lock still guards valid members.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `user`'s one place for `ticket`; the ticket holding it already, if any. The
    /// claim is given back when dropped unless kept.
    pub fn claim(&self, user: &UserId, ticket: TicketId) -> Result<Claim<'_>, TicketId> {
        let mut m = self.lock();
        if let Some(first) = m.users.get(user) {
            return Err(*first);
        }
        m.users.insert(user.clone(), ticket);
        Ok(Claim {
            queue: self,
            user: user.clone(),
            ticket,
            kept: false,
        })
    }

    /// Adds a member that joined with `key`.
    pub fn join(&self, key: u64, item: QueueItem) {
        let mut m = self.lock();
        m.joined.push(Member { key, item });
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.unranked.fetch_add(1, Ordering::AcqRel);
        drop(m);
        self.joined.notify_one();
    }

    /// The store sealed the pre-queue (a request coming its way drew a number): open it
    /// now, whatever this instance's clock says.
    pub fn open_now(&self) {
        self.sealed.notify_one();
    }

    /// Waits for [`open_now`](Self::open_now).
    pub async fn sealed_elsewhere(&self) {
        self.sealed.notified().await;
    }

    /// Waits for a join since the last wait (one before the wait counts).
    pub async fn joined_late(&self) {
        self.joined.notified().await;
    }

    /// Adds a request that drew number `number` in the line after the opening although it
    /// came the pre-queue's way (this instance's clock was behind the store's seal).
    pub fn add_numbered(&self, number: u64, item: QueueItem) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.rank(Some(number), item);
    }

    /// Members waiting to be released.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// True while members wait to be ranked.
    pub fn has_unranked(&self) -> bool {
        self.unranked() > 0
    }

    /// Members waiting to be ranked.
    pub fn unranked(&self) -> usize {
        self.unranked.load(Ordering::Acquire)
    }

    /// Takes the members not ranked yet, for the drain to rank.
    pub fn take_joined(&self) -> Vec<Member> {
        let mut m = self.lock();
        let joined = std::mem::take(&mut m.joined);
        self.unranked.fetch_sub(joined.len(), Ordering::AcqRel);
        joined
    }

    /// Puts back members [`take_joined`](Self::take_joined) took and could not rank.
    pub fn put_back(&self, members: impl IntoIterator<Item = Member>) {
        let mut m = self.lock();
        let before = m.joined.len();
        m.joined.extend(members);
        self.unranked
            .fetch_add(m.joined.len() - before, Ordering::AcqRel);
    }

    /// Ranks members by their keys alone (no shared store): they take the next numbers of
    /// this instance's order, in the order of their keys. Returns them with their numbers.
    pub fn number_locally(&self, mut members: Vec<Member>) -> Vec<(u64, Member)> {
        members.sort_unstable_by_key(|m| m.key);
        let mut m = self.lock();
        members
            .into_iter()
            .map(|member| {
                m.numbered += 1;
                (m.numbered, member)
            })
            .collect()
    }

    /// Puts a ranked member back, to be released by its `number` (`None`: the store could
    /// not rank it, released after the ranked ones).
    pub fn rank(&self, number: Option<u64>, item: QueueItem) {
        let mut m = self.lock();
        match number {
            // A number given twice (the store lost a place and gave it again) must not
            // drop a member: the second goes after the ranked ones.
            Some(n) if !m.ranked.contains_key(&n) => {
                m.ranked.insert(n, item);
            }
            _ => m.unnumbered.push_back(item),
        }
    }

    /// A member dropped at the opening (told sold out): no longer waiting.
    pub fn dropped(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes the next ranked member if `cursor` has passed its number (any, without a
    /// cursor), else says which number it waits for; then the unnumbered ones, only
    /// without a cursor.
    pub fn pop_through(&self, cursor: Option<u64>) -> Head {
        // The drain asks before every release: a sale with no member takes no lock. (A
        // member counts in `waiting` before it can be released.)
        if self.waiting() == 0 {
            return Head::Empty;
        }
        let mut m = self.lock();
        let item = match m.ranked.first_key_value() {
            Some((&n, _)) if cursor.is_some_and(|c| n > c) => return Head::Later(n),
            Some(_) => m.ranked.pop_first().map(|(_, item)| item),
            // Not in the line (the store lost it): released with permits at this instance's
            // pace, never by the cursor — a number past any the line has drawn says so.
            None if cursor.is_some() && !m.unnumbered.is_empty() => return Head::Later(u64::MAX),
            None => m.unnumbered.pop_front(),
        };
        match item {
            Some(item) => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                Head::Item(item)
            }
            None => Head::Empty,
        }
    }

    /// Takes every member, ranked or not (the drain is stopping).
    pub fn take_all(&self) -> Vec<QueueItem> {
        let mut m = self.lock();
        let joined = std::mem::take(&mut m.joined);
        self.unranked.fetch_sub(joined.len(), Ordering::AcqRel);
        let mut all: Vec<QueueItem> = joined.into_iter().map(|j| j.item).collect();
        all.extend(std::mem::take(&mut m.ranked).into_values());
        all.extend(m.unnumbered.drain(..));
        self.waiting.fetch_sub(all.len(), Ordering::AcqRel);
        all
    }
}

/// A user's place in the pre-queue, claimed for a ticket: given back when dropped, unless
/// the request joined.
pub struct Claim<'q> {
    queue: &'q PreQueue,
    user: UserId,
    ticket: TicketId,
    kept: bool,
}

impl Claim<'_> {
    /// The request joined: the place stays its.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut m = self.queue.lock();
        if m.users.get(&self.user) == Some(&self.ticket) {
            m.users.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64) -> QueueItem {
        QueueItem::for_test(seq)
    }

    #[test]
    fn members_are_released_by_rank_then_unnumbered() {
        let q = PreQueue::new();
        for (key, seq) in [(30, 0), (10, 1), (20, 2)] {
            q.join(key, item(seq));
        }
        assert!(q.has_unranked());
        let ranked = q.number_locally(q.take_joined());
        let order: Vec<(u64, u64)> = ranked.iter().map(|(n, m)| (*n, m.item.seq)).collect();
        assert_eq!(order, [(1, 1), (2, 2), (3, 0)], "by key");
        assert!(!q.has_unranked());
        for (n, m) in ranked {
            q.rank(Some(n), m.item);
        }
        q.join(5, item(3));
        let late = q.take_joined();
        q.rank(None, late.into_iter().next().expect("one").item);
        assert!(matches!(q.pop_through(Some(0)), Head::Later(1)));
        let mut seqs = Vec::new();
        while let Head::Item(i) = q.pop_through(None) {
            seqs.push(i.seq);
        }
        assert_eq!(seqs, [1, 2, 0, 3]);
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_number_given_twice_drops_no_member() {
        let q = PreQueue::new();
        q.add_numbered(1, item(0));
        q.add_numbered(1, item(1));
        let mut seqs = Vec::new();
        while let Head::Item(i) = q.pop_through(None) {
            seqs.push(i.seq);
        }
        assert_eq!(seqs, [0, 1]);
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn keys_fit_a_double_exactly() {
        for _ in 0..1000 {
            assert!(PreQueue::draw_key() < 1 << 53);
        }
    }
}
