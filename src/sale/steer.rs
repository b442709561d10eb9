//! A drain rate that finds the backend's pace (`queue.drain_rate = "auto"`): steered once a
//! second by the outbox lag, the age of the oldest reserved order the backend has not taken
//! yet. Over `delivery.max_lag` the drain outruns the backend: the rate is cut in
//! proportion. Under half of it, with requests still queued, the drain is what holds buyers
//! back: the rate is raised by a quarter. In between it holds. Always within
//! `queue.drain_min` and `queue.drain_max`.
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

/// The next rate from `rate`, given the outbox `lag`, its ceiling `max_lag` and whether
/// requests wait in the queue (`backlog`).
pub fn next_rate(
    rate: u32,
    lag: Duration,
    max_lag: Duration,
    backlog: bool,
    bounds: DrainBounds,
) -> (u32, Steer) {
    let (lag, max_lag) = (lag.as_secs_f64(), max_lag.as_secs_f64().max(1e-3));
    let (next, why) = if lag > max_lag {
        let by = (max_lag / lag).clamp(0.5, 0.9);
        ((f64::from(rate) * by).floor() as u32, Steer::Cut)
    } else if lag <= max_lag / 2.0 && backlog {
        let up = (f64::from(rate) * 1.25).ceil() as u32;
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

    #[test]
    fn a_lag_over_the_ceiling_cuts_in_proportion() {
        assert_eq!(next_rate(200, s(4.0), MAX_LAG, true, B), (100, Steer::Cut));
        assert_eq!(next_rate(200, s(2.1), MAX_LAG, true, B), (180, Steer::Cut));
        assert_eq!(
            next_rate(200, s(60.0), MAX_LAG, false, B),
            (100, Steer::Cut)
        );
        assert_eq!(next_rate(12, s(9.0), MAX_LAG, true, B), (10, Steer::Cut));
    }

    #[test]
    fn a_short_lag_with_buyers_waiting_raises_it() {
        assert_eq!(
            next_rate(200, s(0.2), MAX_LAG, true, B),
            (250, Steer::Raised)
        );
        assert_eq!(
            next_rate(1, s(0.0), MAX_LAG, true, DrainBounds { min: 1, max: 5 }).0,
            2
        );
        assert_eq!(
            next_rate(900, s(0.0), MAX_LAG, true, B),
            (1000, Steer::Raised)
        );
    }

    #[test]
    fn otherwise_it_holds() {
        assert_eq!(
            next_rate(200, s(0.2), MAX_LAG, false, B),
            (200, Steer::Held)
        );
        assert_eq!(next_rate(200, s(1.5), MAX_LAG, true, B), (200, Steer::Held));
        assert_eq!(
            next_rate(5, s(1.5), MAX_LAG, true, B),
            (10, Steer::Held),
            "into bounds"
        );
    }
}
