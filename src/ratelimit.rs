//! Keyed rate limits (per user, per client IP) on sale routes, with memory kept bounded by
//! forgetting keys whose bucket is full again.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A GCRA limiter per key (`None` when configured off: rate 0), and the quota (rate,
/// burst) it was made for.
type Limiter<K> = (Option<DefaultKeyedRateLimiter<K>>, (u32, u32));

/// A keyed limiter, replaced whole when a reload changes its quota.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: ArcSwap<Limiter<K>>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `rate` requests per second per key with bursts of `burst`; rate 0 allows everything.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            limiter: ArcSwap::from_pointee(Self::made(rate, burst)),
            clock: DefaultClock::default(),
        }
    }

    fn made(rate: u32, burst: u32) -> Limiter<K> {
        let limiter = NonZeroU32::new(rate).map(|r| {
            let burst = NonZeroU32::new(burst).unwrap_or(r);
            RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
        });
        (limiter, (rate, burst))
    }

    /// Limits to `rate` and `burst` from now on (a reload); every key starts afresh, and
    /// only if the quota changed.
    pub fn set(&self, rate: u32, burst: u32) {
        if self.limiter.load().1 != (rate, burst) {
            self.limiter
                .store(std::sync::Arc::new(Self::made(rate, burst)));
        }
    }

    /// `Ok` if `key` may proceed now, else how long until it may.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        match &self.limiter.load().0 {
            None => Ok(()),
            Some(l) => l
                .check_key(key)
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Forgets keys whose bucket has refilled: they would behave exactly like new keys.
    pub fn sweep(&self) {
        if let Some(l) = &self.limiter.load().0 {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.limiter.load().0.as_ref().map_or(0, |l| l.len())
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole seconds to put in Retry-After for a wait (at least 1).
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.clamp(1, u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let l = KeyedLimit::new(1, 2);
        assert!(l.check(&"a").is_ok());
        assert!(l.check(&"a").is_ok());
        let wait = l
            .check(&"a")
            .expect_err("third within the second is refused");
        assert!(wait > Duration::ZERO);
        assert!(l.check(&"b").is_ok(), "keys are independent");
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn a_reload_sets_a_new_quota_and_leaves_an_unchanged_one_alone() {
        let l = KeyedLimit::new(0, 0);
        l.set(1, 1);
        assert!(l.check(&"a").is_ok());
        assert!(l.check(&"a").is_err(), "limited from the reload on");
        // The same quota again keeps the buckets: "a" stays limited.
        l.set(1, 1);
        assert!(l.check(&"a").is_err());
        l.set(0, 0);
        assert!(l.check(&"a").is_ok(), "off again");
    }

    #[test]
    fn rate_zero_is_off() {
        let l = KeyedLimit::new(0, 0);
        for _ in 0..1000 {
            assert!(l.check(&1u32).is_ok());
        }
        assert!(l.is_empty());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn keys_are_forgotten_once_their_bucket_refills() {
        // 1000/s with burst 1: a key's bucket refills 1 ms after its request.
        let l = KeyedLimit::new(1000, 1);
        for user in 0..10_000u32 {
            assert!(l.check(&user).is_ok());
        }
        assert_eq!(l.len(), 10_000);
        let start = std::time::Instant::now();
        while !l.is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "keys never forgotten"
            );
            l.sweep();
        }
    }
}
