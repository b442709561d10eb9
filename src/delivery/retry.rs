//! When to try an order again, and when to stop trying the backend for a while.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::types::OrderId;

/// Per-order attempt counts and next-attempt times: exponential backoff with jitter.
pub struct Backoff {
    base: Duration,
    max: Duration,
    orders: HashMap<OrderId, (u32, Instant)>,
}

impl Backoff {
    /// Waits start at `base`, double each attempt, never exceed `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            orders: HashMap::new(),
        }
    }

    /// True if `order` may be attempted at `now`.
    pub fn due(&self, order: &OrderId, now: Instant) -> bool {
        self.orders.get(order).is_none_or(|(_, at)| *at <= now)
    }

    /// Attempts made so far.
    pub fn attempts(&self, order: &OrderId) -> u32 {
        self.orders.get(order).map_or(0, |(n, _)| *n)
    }

    /// Records a failed attempt; the next one waits base × 2^(attempts-1), ±50 %.
    pub fn failed(&mut self, order: OrderId, now: Instant) {
        let n = self.attempts(&order) + 1;
        let exp = self.base.saturating_mul(1u32 << (n - 1).min(20));
        let capped = exp.min(self.max);
        // Full jitter around the nominal wait spreads retries of a batch apart.
        let factor = rand::rng().random_range(0.5..1.5);
        self.orders.insert(order, (n, now + capped.mul_f64(factor)));
    }

    /// Forgets an order that left the outbox.
    pub fn done(&mut self, order: &OrderId) {
        self.orders.remove(order);
    }

    /// The earliest time an order waiting here is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.orders.values().map(|(_, at)| *at).min()
    }

    /// Forgets orders not seen in the outbox any more (delivered by another instance).
    pub fn retain(&mut self, keep: impl Fn(&OrderId) -> bool) {
        self.orders.retain(|o, _| keep(o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let o = OrderId::random();
        let t0 = Instant::now();
        assert!(b.due(&o, t0));
        for n in 1..=8u32 {
            b.failed(o, t0);
            assert_eq!(b.attempts(&o), n);
            let wait = b.next_due().expect("scheduled") - t0;
            let nominal = Duration::from_millis(100 * (1 << (n - 1))).min(Duration::from_secs(1));
            assert!(
                wait >= nominal.mul_f64(0.5) && wait <= nominal.mul_f64(1.5),
                "{n}: {wait:?}"
            );
            assert!(!b.due(&o, t0));
        }
        b.done(&o);
        assert!(b.due(&o, t0) && b.next_due().is_none());
    }
}
