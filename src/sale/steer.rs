//! A drain rate that finds the backend's pace (`queue.drain_rate = "auto"`): steered once a
//! second by the outbox, the reserved orders the backend has not taken yet. The backend's
//! pace is the rate less the outbox's growth a second; an order's wait in the outbox is
//! the orders there over that pace (Little's law). Not the age of its oldest order: one
//! order the backend never answers for sure is asked again and again and grows old, while
//! the rest go through at once.
//!
//! - A wait over `delivery.max_lag` with the outbox growing: the drain outruns the backend;
//!   the rate goes to nine tenths of its pace (at most halved at once), so the outbox
//!   shrinks.
//! - A wait over it with the outbox shrinking: the backend works the backlog off at this
//!   rate; it holds (cutting on until the wait came back would overshoot below the pace).
//! - A wait under half of it, with requests still queued: the drain is what holds buyers
//!   back; the rate is raised, by a half while the wait is under a quarter of `max_lag`,
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
    /// Orders in it, not delivered yet.
    pub orders: u64,
    /// How much it grew a second since the last steering (negative: it shrank).
    pub growth: f64,
}

impl Sight {
    /// The backend's pace at drain rate `rate`: what went in less what stayed.
    pub fn pace(&self, rate: u32) -> f64 {
        (f64::from(rate) - self.growth).max(0.0)
    }

    /// An order's wait in the outbox at that pace (a minute when nothing moves).
    pub fn wait(&self, rate: u32) -> Duration {
        let secs = self.orders as f64 / self.pace(rate).max(1.0 / 60.0);
        Duration::from_secs_f64(secs.min(60.0))
    }
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
    let (wait, r) = (sight.wait(rate), f64::from(rate));
    let (next, why) = if wait > max_lag && sight.growth > 0.0 {
        (
            (sight.pace(rate) * 0.9).max(r * 0.5).floor() as u32,
            Steer::Cut,
        )
    } else if wait <= max_lag / 2 && backlog {
        let by = if wait <= max_lag / 4 { 1.5 } else { 1.25 };
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

    /// A sight whose wait at `rate` is `wait` seconds.
    fn sight(rate: u32, wait: f64, growth: f64) -> Sight {
        let pace = (f64::from(rate) - growth).max(1.0 / 60.0);
        Sight {
            orders: (wait * pace).round() as u64,
            growth,
        }
    }

    #[test]
    fn the_wait_is_the_outbox_over_the_backends_pace() {
        let s = Sight {
            orders: 160,
            growth: 20.0,
        };
        assert_eq!(s.pace(100), 80.0);
        assert_eq!(s.wait(100), Duration::from_secs(2));
        let stalled = Sight {
            orders: 5,
            growth: 100.0,
        };
        assert_eq!(stalled.wait(100), Duration::from_secs(60), "nothing moves");
    }

    #[test]
    fn a_growing_outbox_past_the_wait_goes_below_the_backends_pace() {
        // 100/s drained, the outbox growing 20/s: the backend takes 80/s.
        assert_eq!(
            next_rate(100, sight(100, 3.0, 20.0), MAX_LAG, true, B),
            (72, Steer::Cut)
        );
        // Never more than halved at once, never below the floor.
        let flooded = sight(200, 9.0, 190.0);
        assert_eq!(next_rate(200, flooded, MAX_LAG, true, B), (100, Steer::Cut));
        assert_eq!(
            next_rate(12, sight(12, 9.0, 11.0), MAX_LAG, false, B),
            (10, Steer::Cut)
        );
    }

    #[test]
    fn a_shrinking_outbox_holds_however_long_its_wait() {
        let held = (100, Steer::Held);
        assert_eq!(
            next_rate(100, sight(100, 5.0, -4.0), MAX_LAG, true, B),
            held
        );
        assert_eq!(next_rate(100, sight(100, 5.0, 0.0), MAX_LAG, true, B), held);
    }

    #[test]
    fn a_short_wait_with_buyers_waiting_raises_it() {
        let raised = |r| (r, Steer::Raised);
        assert_eq!(
            next_rate(200, sight(200, 0.8, 5.0), MAX_LAG, true, B),
            raised(250)
        );
        assert_eq!(
            next_rate(200, sight(200, 0.2, 0.0), MAX_LAG, true, B),
            raised(300)
        );
        let tiny = DrainBounds { min: 1, max: 5 };
        assert_eq!(next_rate(1, sight(1, 0.0, 0.0), MAX_LAG, true, tiny).0, 2);
        assert_eq!(
            next_rate(900, sight(900, 0.0, 0.0), MAX_LAG, true, B),
            raised(1000)
        );
    }

    #[test]
    fn otherwise_it_holds() {
        let at = |r, wait, growth| next_rate(r, sight(r, wait, growth), MAX_LAG, true, B);
        let idle = next_rate(200, sight(200, 0.2, 0.0), MAX_LAG, false, B);
        assert_eq!(idle, (200, Steer::Held));
        assert_eq!(at(200, 1.5, 9.0), (200, Steer::Held));
        assert_eq!(at(5, 1.5, 0.0), (10, Steer::Held), "into bounds");
    }
}
