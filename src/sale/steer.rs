//! A drain rate that finds the backend's pace (`queue.drain_rate = "auto"`): steered once a
//! second by the outbox: its lag (the age of the oldest reserved order the backend has not
//! taken yet) and how many orders it holds.
//!
//! - Lag over `delivery.max_lag` with the outbox growing: the drain outruns the backend.
//!   The backend's pace is the rate less the outbox's growth a second; the rate goes to
//!   nine tenths of that pace (at most halved at once), so the outbox shrinks.
//! - Lag over it with the outbox shrinking: the backend works the backlog off at this rate;
//!   it holds. (The lag is late news: the head of the outbox was reserved when the rate was
//!   higher, and cutting on until it came back would overshoot far below the pace.)
//! - Lag under half of it, with requests still queued: the drain is what holds buyers
//!   back; the rate is raised, by a half while the lag is under a quarter of `max_lag`,
//!   else by a quarter.
//! - Otherwise it holds. Always within `queue.drain_min` and `queue.drain_max`.
//!
//! With a shared store one instance steers for the fleet (the live member whose name sorts
//! first), and the rate goes to the store as an operator's would: every instance drains
//! by it, and the lag it reads is the fleet's.

use std::time::Duration;

use super::DrainBounds;

/// How often the rate is steered.
pub const STEER_EVERY: Duration = Duration::from_secs(1);

/// What the last steering did, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// Not steered yet.
    Unsteered,
    /// The lag was under half of `max_lag` with requests queued: raised.
    Raised,
    /// The lag was over `max_lag`: cut.
    Cut,
    /// The lag was between, or nothing was queued: held.
    Held,
}

impl Steer {
    /// Its name in the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unsteered => "unsteered",
            Self::Raised => "raised",
            Self::Cut => "cut",
            Self::Held => "held",
        }
    }

    /// As stored in an atomic.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From [`code`](Self::code).
    pub fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Raised,
            2 => Self::Cut,
            3 => Self::Held,
            _ => Self::Unsteered,
        }
    }
}

/// What the steering sees of the outbox.
#[derive(Debug, Clone, Copy)]
pub struct Sight {
    /// The age of the oldest order not delivered yet.
    pub lag: Duration,
    /// How much the outbox grew a second since the last steering (negative: it shrank).
    pub growth: f64,
}

/// The next rate from `rate`, given what the outbox shows, its lag's ceiling `max_lag`
/// and whether requests wait in the queue (`backlog`).
pub fn next_rate(
    rate: u32,
    sight: Sight,
    max_lag: Duration,
    backlog: bool,
    bounds: DrainBounds,
) -> (u32, Steer) {
    let (lag, r) = (sight.lag, f64::from(rate));
    let (next, why) = if lag > max_lag && sight.growth > 0.0 {
        let pace = (r - sight.growth).max(0.0);
        ((pace * 0.9).max(r * 0.5).floor() as u32, Steer::Cut)
    } else if lag <= max_lag / 2 && backlog {
        let by = if lag <= max_lag / 4 { 1.5 } else { 1.25 };
        let up = (r * by).ceil() as u32;
        (up.max(rate.saturating_add(1)), Steer::Raised)
    } else {
        (rate, Steer::Held)
    };
    (next.clamp(bounds.min, bounds.max.max(bounds.min)), why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: DrainBounds = DrainBounds { min: 10, max: 1000 };
    const MAX_LAG: Duration = Duration::from_secs(2);

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn sight(lag: f64, growth: f64) -> Sight {
        Sight {
            lag: s(lag),
            growth,
        }
    }

    #[test]
    fn a_growing_outbox_past_the_lag_goes_below_the_backends_pace() {
        // 100/s drained, the outbox growing 20/s: the backend takes 80/s.
        assert_eq!(
            next_rate(100, sight(3.0, 20.0), MAX_LAG, true, B),
            (72, Steer::Cut)
        );
        // Never more than halved at once, never below the floor.
        assert_eq!(
            next_rate(200, sight(9.0, 190.0), MAX_LAG, true, B),
            (100, Steer::Cut)
        );
        assert_eq!(
            next_rate(12, sight(9.0, 12.0), MAX_LAG, false, B),
            (10, Steer::Cut)
        );
    }

    #[test]
    fn a_shrinking_outbox_holds_however_late_its_head() {
        assert_eq!(
            next_rate(100, sight(5.0, -4.0), MAX_LAG, true, B),
            (100, Steer::Held)
        );
        assert_eq!(
            next_rate(100, sight(5.0, 0.0), MAX_LAG, true, B),
            (100, Steer::Held)
        );
    }

    #[test]
    fn a_short_lag_with_buyers_waiting_raises_it() {
        assert_eq!(
            next_rate(200, sight(0.8, 5.0), MAX_LAG, true, B),
            (250, Steer::Raised)
        );
        assert_eq!(
            next_rate(200, sight(0.2, 0.0), MAX_LAG, true, B),
            (300, Steer::Raised)
        );
        let tiny = DrainBounds { min: 1, max: 5 };
        assert_eq!(next_rate(1, sight(0.0, 0.0), MAX_LAG, true, tiny).0, 2);
        assert_eq!(
            next_rate(900, sight(0.0, 0.0), MAX_LAG, true, B),
            (1000, Steer::Raised)
        );
    }

    #[test]
    fn otherwise_it_holds() {
        assert_eq!(
            next_rate(200, sight(0.2, 0.0), MAX_LAG, false, B),
            (200, Steer::Held)
        );
        assert_eq!(
            next_rate(200, sight(1.5, 9.0), MAX_LAG, true, B),
            (200, Steer::Held)
        );
        let held = next_rate(5, sight(1.5, 0.0), MAX_LAG, true, B);
        assert_eq!(held, (10, Steer::Held), "into bounds");
    }
}
