//! The fleet's line: one order for every instance sharing the store. Each request a shared
//! store admits (its token held for it) draws the sale's next line number in the same
//! store step, so numbers follow the order in which the fleet admitted requests, whichever
//! instance took them. A cursor on the store's clock passes numbers at the sale's drain
//! rate; every instance releases its queued requests whose number the cursor has passed.
//! The cursor never waits on a number: one whose request is gone (refused after its
//! hold, or its instance died) is passed like the others, at the cost of one number's time.
//!
//! The cursor advances by `rate × the time since it last moved`, at most [`burst`] numbers
//! at once (so a drain that was held, or a line that was empty, does not release a burst),
//! and never past the last number drawn (time with nobody in line is not saved up). Store
//! calls per second depend on the number of instances, not on the rate: an instance asks
//! at most once a [`LEASE_PERIOD`], while it has requests queued.
//!
//! The Redis store runs the same arithmetic in `lua/advance_line.lua`; keep them in step.

use super::lease::lease_size;
#[cfg(doc)]
use super::lease::LEASE_PERIOD;

/// The fleet's line of a sale as one call to the store left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Requests numbered up to and including this one may be released.
    pub cursor: u64,
    /// The last number drawn: the line's length is `admitted - cursor`.
    pub admitted: u64,
    /// The sale's total drain rate, as the store holds it.
    pub rate: u32,
}

/// What the store keeps of a sale's line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LineState {
    /// Numbers drawn so far.
    pub admitted: u64,
    /// The cursor, with the fraction of a number accrued.
    pub cursor: f64,
    /// When the cursor last moved (store clock, µs); `None` before it ever did.
    pub at_us: Option<f64>,
}

/// The most numbers the cursor passes at once: two leases' worth of the rate.
pub fn burst(rate: u32) -> u32 {
    lease_size(rate).saturating_mul(2)
}

/// Moves `state`'s cursor to `now_us` at `rate`; returns the line as callers see it.
pub fn advance(state: &mut LineState, now_us: f64, rate: u32) -> Line {
    let rate = rate.max(1);
    let most = f64::from(burst(rate));
    let credit = match state.at_us {
        Some(at) => ((now_us - at).max(0.0) * f64::from(rate) / 1_000_000.0).min(most),
        None => most,
    };
    state.cursor = (state.cursor + credit).min(state.admitted as f64);
    state.at_us = Some(now_us);
    Line {
        cursor: state.cursor.floor() as u64,
        admitted: state.admitted,
        rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_passes_numbers_at_the_rate_and_never_past_the_last() {
        let mut s = LineState {
            admitted: 1000,
            ..LineState::default()
        };
        // A fresh line lets a burst through at once, then moves at the rate.
        assert_eq!(advance(&mut s, 0.0, 100).cursor, u64::from(burst(100)));
        assert_eq!(
            advance(&mut s, 1_000_000.0, 100).cursor,
            8,
            "a second later: one burst more"
        );
        let mut now = 1_000_000.0;
        for _ in 0..100 {
            now += 10_000.0;
            advance(&mut s, now, 100);
        }
        assert_eq!(advance(&mut s, now, 100).cursor, 108, "one second at 100/s");
        s.admitted = 105;
        assert_eq!(advance(&mut s, now + 1_000_000.0, 100).cursor, 105);
        // Time with nobody in line is not saved up.
        s.admitted = 200;
        assert_eq!(advance(&mut s, now + 1_010_000.0, 100).cursor, 106);
    }
}
