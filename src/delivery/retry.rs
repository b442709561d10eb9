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

/// The breaker toward the backend: after `threshold` failed deliveries in a row it holds
/// deliveries back for `cooldown` instead of burning retries, then lets one probe.
pub struct BackendBreaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl BackendBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            failures: 0,
            open_until: None,
        }
    }

    /// How many deliveries may go out now: all when closed, one probe after the cool-down,
    /// none while open.
    pub fn allowance(&self, now: Instant, max: usize) -> usize {
        match self.open_until {
            None => max,
            Some(until) if now >= until => 1,
            Some(_) => 0,
        }
    }

    /// True while it holds deliveries back (open, cool-down not over).
    pub fn holding(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }

    /// When an open breaker lets the next probe through.
    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    /// The backend answered (even with a refusal): close.
    pub fn success(&mut self) {
        if self.open_until.is_some() {
            tracing::info!("backend answers again; delivery breaker closed");
        }
        self.failures = 0;
        self.open_until = None;
    }

    /// A delivery failed in a retryable way.
    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.failures >= self.threshold || self.open_until.is_some() {
            if self.open_until.is_none_or(|u| now >= u) {
                tracing::warn!(
                    failures = self.failures,
                    "backend failing; delivery breaker open"
                );
            }
            self.open_until = Some(now + self.cooldown);
        }
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

    #[test]
    fn breaker_opens_holds_then_probes_once() {
        let mut br = BackendBreaker::new(2, Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(br.allowance(t0, 16), 16);
        br.failure(t0);
        assert_eq!(br.allowance(t0, 16), 16, "one failure is not a pattern");
        br.failure(t0);
        assert_eq!(br.allowance(t0, 16), 0, "open: nothing goes out");
        assert!(br.holding(t0));
        let later = t0 + Duration::from_secs(5);
        assert!(
            !br.holding(later),
            "cooled down: no longer holding anything back"
        );
        assert_eq!(br.allowance(later, 16), 1, "after the cool-down, one probe");
        br.failure(later);
        assert_eq!(br.allowance(later, 16), 0, "a failed probe re-opens it");
        br.success();
        assert_eq!(br.allowance(later, 16), 16);
    }
}
