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
//! A sale with a pre-queue: requests that join it before the opening draw no number but
//! a random key (each instance's CSPRNG), kept in the store. The first number drawn after
//! the opening, or the first instance to open the pre-queue, seals it: its members take the
//! next numbers in the order of their keys — one uniform permutation for the whole fleet —
//! and later arrivals come after them. Numbers beyond what stock-aware admission keeps
//! (see [`LineState::keep`]) are passed at once, not at the rate.
//!
//! The Redis store runs the same arithmetic in `lua/advance_line.lua`,
//! `lua/hold_token.lua` and `lua/open_prequeue.lua`; keep them in step.

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
    /// The pre-queue, once sealed: its members hold numbers `base + 1 ..= base + size`.
    pub prequeue: Option<Sealed>,
}

/// A sealed pre-queue's place in the line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    /// The last number drawn before the seal.
    pub base: u64,
    /// Its members.
    pub size: u64,
    /// How many of them stock-aware admission keeps (the first instance to open it says):
    /// the numbers after them are passed at once.
    pub kept: Option<u64>,
}

/// What opening a sale's pre-queue told an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The pre-queue as sealed.
    pub sealed: Sealed,
    /// Each asked ticket's 1-based place in the shuffled pre-queue (its number in the line
    /// is `base + place`); `None` for a ticket the store does not know (it lost the
    /// pre-queue).
    pub places: Vec<Option<u64>>,
    /// The line's cursor then.
    pub cursor: u64,
    /// Numbers drawn so far (the pre-queue's included).
    pub admitted: u64,
}

impl LineState {
    /// Seals the pre-queue, of `size` members, unless it is sealed already: they take the
    /// next `size` numbers. Every number drawn after this comes after them.
    pub fn seal(&mut self, size: u64) -> Sealed {
        *self.prequeue.get_or_insert_with(|| {
            let base = self.admitted;
            self.admitted += size;
            Sealed {
                base,
                size,
                kept: None,
            }
        })
    }

    /// Records how many of the sealed pre-queue's members are kept, unless recorded
    /// already (the first opening's figure stands: every instance passes the same numbers).
    pub fn keep(&mut self, kept: u64) {
        if let Some(p) = &mut self.prequeue {
            p.kept.get_or_insert(kept.min(p.size));
        }
    }
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
    // Numbers of the pre-queue's members told sold out at the opening hold nobody: passed.
    if let Some(Sealed {
        base,
        size,
        kept: Some(kept),
    }) = state.prequeue
    {
        let (from, to) = ((base + kept) as f64, (base + size) as f64);
        if state.cursor >= from && state.cursor < to {
            state.cursor = to.min(state.admitted as f64);
        }
    }
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

    #[test]
    fn a_sealed_prequeue_comes_first_and_its_dropped_numbers_are_passed_at_once() {
        let mut s = LineState {
            admitted: 3,
            cursor: 3.0,
            at_us: Some(0.0),
            ..LineState::default()
        };
        let sealed = s.seal(100);
        assert_eq!((sealed.base, sealed.size, s.admitted), (3, 100, 103));
        assert_eq!(s.seal(7), sealed, "sealed once");
        s.admitted += 5; // five arrivals after the opening
        s.keep(10);
        s.keep(50);
        assert_eq!(
            s.prequeue.and_then(|p| p.kept),
            Some(10),
            "the first figure stands"
        );
        // 10 kept at 1/s: ten seconds, then the 90 dropped numbers go at once.
        for second in 1..10 {
            assert_eq!(advance(&mut s, second as f64 * 1e6, 1).cursor, 3 + second);
        }
        assert_eq!(advance(&mut s, 10_000_000.0, 1).cursor, 103);
        assert_eq!(advance(&mut s, 11_000_000.0, 1).cursor, 104);
    }
}
