//! Drain leases: a sale's `drain_rate` is one budget for every instance sharing the store.
//! The store keeps it as a GCRA (one "theoretical arrival time" per sale); an instance with
//! requests queued leases a few permits at a time and releases that many.
//!
//! A lease holds at most [`LEASE_PERIOD`] worth of the rate and an instance leases at most
//! once a period, so store calls per second depend on the number of instances, not on the
//! rate. The budget holds two leases' worth, so a late timer loses nothing, and it bounds
//! the burst the backend can see above the rate (two periods' worth: 4 %).
//!
//! The Redis store runs the same arithmetic in `lua/lease_drain.lua`; keep them in step.

use std::time::Duration;

/// How much of the rate one lease holds, and how often an instance leases at most.
pub const LEASE_PERIOD: Duration = Duration::from_millis(20);

/// Permits granted by one lease call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainLease {
    /// Permits to release queued requests with, now (0 up to what was asked).
    pub granted: u32,
    /// The sale's total rate across instances, as the store holds it.
    pub rate: u32,
    /// How long until a full lease (or what was asked, if less) can be granted.
    pub next_in: Duration,
}

/// The most permits one lease holds at `rate` per second: a period's worth, at least one.
pub fn lease_size(rate: u32) -> u32 {
    let per_period = u64::from(rate.max(1)) * LEASE_PERIOD.as_micros() as u64;
    u32::try_from(per_period.div_ceil(1_000_000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// One grant of the GCRA. `tat_us` is the stored theoretical arrival time (`None` when
/// there is none, or it has expired: a full budget), `now_us` the store's clock.
/// Returns the lease and the new arrival time to store.
pub fn grant(tat_us: Option<f64>, now_us: f64, rate: u32, want: u32) -> (DrainLease, f64) {
    let rate = rate.max(1);
    let size = lease_size(rate);
    let interval = 1_000_000.0 / f64::from(rate);
    let tolerance = 2.0 * f64::from(size) * interval;
    let mut tat = tat_us.map_or(now_us, |t| t.max(now_us));
    let available = ((now_us + tolerance - tat) / interval).floor().max(0.0);
    let granted = (f64::from(want)).min(available) as u32;
    tat += f64::from(granted) * interval;
    let need = f64::from(want.clamp(1, size));
    let next_in_us = (tat + need * interval - tolerance - now_us).max(0.0);
    let lease = DrainLease {
        granted,
        rate,
        next_in: Duration::from_micros(next_in_us.ceil() as u64),
    };
    (lease, tat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_a_period_of_the_rate() {
        assert_eq!(lease_size(1), 1);
        assert_eq!(lease_size(50), 1);
        assert_eq!(lease_size(51), 2);
        assert_eq!(lease_size(1000), 20);
        assert_eq!(lease_size(u32::MAX), 85_899_346);
    }

    #[test]
    fn a_fresh_budget_holds_two_leases_then_paces_at_the_rate() {
        let (first, tat) = grant(None, 0.0, 1000, 20);
        assert_eq!(first.granted, 20);
        assert_eq!(first.next_in, Duration::ZERO);
        let (second, tat) = grant(Some(tat), 0.0, 1000, 20);
        assert_eq!(second.granted, 20);
        assert_eq!(second.next_in, Duration::from_millis(20));
        let (empty, tat) = grant(Some(tat), 0.0, 1000, 20);
        assert_eq!(empty.granted, 0);
        // With the budget spent, leasing as soon as allowed for a second grants the rate.
        let mut now = 0.0;
        let mut tat = tat;
        let mut total = 0;
        while now <= 1_000_000.0 {
            let (l, t) = grant(Some(tat), now, 1000, 20);
            total += l.granted;
            tat = t;
            now += l.next_in.as_micros().max(1) as f64;
        }
        assert_eq!(total, 1000);
    }

    #[test]
    fn a_late_caller_loses_nothing_within_the_budget() {
        let (_, tat) = grant(None, 0.0, 1000, 40);
        // Woken 35 ms late for a 20 ms period: 35 permits are waiting, not 20.
        let (l, _) = grant(Some(tat), 35_000.0, 1000, 40);
        assert_eq!(l.granted, 35);
    }

    #[test]
    fn a_small_want_takes_only_what_it_asks() {
        let (l, tat) = grant(None, 0.0, 1000, 3);
        assert_eq!(l.granted, 3);
        assert_eq!(l.next_in, Duration::ZERO);
        let (l, _) = grant(Some(tat), 0.0, 1000, 100);
        assert_eq!(l.granted, 37, "the budget is two leases' worth");
    }
}
