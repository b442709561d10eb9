//! The other instances' pending requests of a sale, as stock-aware admission counts them.
//!
//! The count is read from the store at each stock sync, so it ages while the stock figure it
//! is compared with stays fresh (every reservation here brings the store's figure back). A
//! request the others reserved since the reading is then counted twice, as pending and as a
//! unit sold: with one unit left that refused the last buyer "sold out" while the unit stood
//! unsold and nothing waited for it. So the units the stock lost since the reading, beyond
//! those this instance reserved, are taken off the count read: they were the others'.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The other instances' pending requests, kept fresh by the stock figure.
#[derive(Debug, Default)]
pub struct PendingElsewhere {
    /// The count as the last sync read it.
    read: AtomicUsize,
    /// The stock left when it was read.
    stock_then: AtomicU64,
    /// This instance's reserved units when it was read.
    mine_then: AtomicU64,
    /// Units this instance's drain reserved (a running count).
    mine: AtomicU64,
}

impl PendingElsewhere {
    /// Records a reading: `n` pending elsewhere while `remaining` units were left.
    pub fn record(&self, n: usize, remaining: u64) {
        self.mine_then
            .store(self.mine.load(Ordering::Acquire), Ordering::Release);
        self.stock_then.store(remaining, Ordering::Release);
        self.read.store(n, Ordering::Release);
    }

    /// Counts `units` this instance reserved.
    pub fn reserved_here(&self, units: u32) {
        self.mine.fetch_add(u64::from(units), Ordering::AcqRel);
    }

    /// The count now that `remaining` units are left: the reading less what the others
    /// reserved since. Where it is not exact (a request of several units, a unit handed
    /// back) it errs toward admitting, as stock-aware admission already may.
    pub fn now(&self, remaining: u64) -> usize {
        let read = self.read.load(Ordering::Acquire);
        let mine_since = self
            .mine
            .load(Ordering::Acquire)
            .saturating_sub(self.mine_then.load(Ordering::Acquire));
        let theirs_since = self
            .stock_then
            .load(Ordering::Acquire)
            .saturating_sub(remaining)
            .saturating_sub(mine_since);
        read.saturating_sub(usize::try_from(theirs_since).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_others_reserved_since_the_reading_is_no_longer_pending() {
        let p = PendingElsewhere::default();
        // Read at a sync: 2 pending on the other instance, 3 units left.
        p.record(2, 3);
        assert_eq!(p.now(3), 2);
        // They reserve both and this instance one: of the three units gone, two were theirs.
        p.reserved_here(1);
        assert_eq!(p.now(0), 0);
        // The failing case: the others' two reserved, one unit left, none pending here.
        let q = PendingElsewhere::default();
        q.record(2, 3);
        assert_eq!(
            q.now(1),
            0,
            "their two requests are sold units now, not pending"
        );
    }

    #[test]
    fn this_instances_own_reservations_leave_the_count_alone() {
        let p = PendingElsewhere::default();
        p.record(4, 10);
        p.reserved_here(3);
        assert_eq!(p.now(7), 4);
        // Units handed back (stock above the reading) take nothing off either.
        assert_eq!(p.now(12), 4);
        // A new reading starts afresh from its own stock figure.
        p.record(1, 7);
        assert_eq!(p.now(7), 1);
        p.reserved_here(2);
        assert_eq!(p.now(4), 0);
    }
}
