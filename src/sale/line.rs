//! This instance's view of a sale's line across the fleet (see [`crate::store::line`]):
//! the cursor and the last number drawn, as the store last reported them (with each token
//! hold, and each time the drain asks). Positions and ETAs of requests that hold a number
//! are reckoned from it: a buyer's place in the fleet's line at the fleet's rate, the same
//! whichever instance answers.

use std::sync::atomic::{AtomicU64, Ordering};

/// The latest cursor and last number of a sale's line this instance has seen.
#[derive(Debug, Default)]
pub struct LineView {
    cursor: AtomicU64,
    admitted: AtomicU64,
}

impl LineView {
    /// Takes in what the store reported; both only ever move on, so a late reply cannot
    /// move a position back up.
    pub fn seen(&self, cursor: u64, admitted: u64) {
        self.cursor.fetch_max(cursor, Ordering::AcqRel);
        self.admitted
            .fetch_max(admitted.max(cursor), Ordering::AcqRel);
    }

    /// Takes in what the cursor's own step reported: like [`seen`](Self::seen), except that
    /// a line behind what was seen is a new one (the store lost the old, a Redis restarted
    /// empty) and replaces it.
    pub fn stepped(&self, cursor: u64, admitted: u64) {
        if admitted < self.cursor() {
            self.cursor.store(cursor, Ordering::Release);
            self.admitted.store(admitted.max(cursor), Ordering::Release);
        } else {
            self.seen(cursor, admitted);
        }
    }

    /// The cursor: numbers up to it may be released.
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Numbers drawn and not passed by the cursor yet, fleet-wide.
    pub fn length(&self) -> u64 {
        self.admitted
            .load(Ordering::Acquire)
            .saturating_sub(self.cursor())
    }

    /// The 1-based place of number `number` in the line (1 once the cursor has passed it).
    pub fn position(&self, number: u64) -> u64 {
        number.saturating_sub(self.cursor()).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_from_the_cursor_and_never_go_up() {
        let v = LineView::default();
        v.seen(10, 50);
        assert_eq!((v.position(30), v.length()), (20, 40));
        v.seen(4, 60);
        assert_eq!(
            v.position(30),
            20,
            "a late reply does not move the cursor back"
        );
        assert_eq!(v.length(), 50);
        assert_eq!(v.position(3), 1);
        // A line behind the one seen is a new one.
        v.stepped(2, 5);
        assert_eq!((v.cursor(), v.length()), (2, 3));
    }
}
