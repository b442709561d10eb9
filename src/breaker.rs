//! A circuit breaker, for the store and for the backend alike: after `threshold` failures
//! in a row it opens for `cooldown`, refusing at once instead of piling onto a dead or
//! drowning dependency; after the cool-down one caller at a time probes, and a success
//! closes it.
//!
//! A probe always ends: its result moves the breaker on, and a probe whose caller goes
//! away first (a client hanging up drops the request's future) hands the probe back, so
//! the next call probes at once. Without that, one cancelled probe would leave the
//! breaker refusing every call for good while the dependency answers.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use crate::log_throttle::Repeats;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const PROBING: u8 = 2;

/// A circuit breaker in front of one dependency; lock-free, shared by its callers.
pub struct CircuitBreaker {
    /// What it guards, in its log lines (`store`, `store:<sku>`, `backend`).
    name: std::borrow::Cow<'static, str>,
    threshold: u32,
    cooldown: Duration,
    state: AtomicU8,
    failures: AtomicU32,
    /// While open, when the next probe may go, in ms since `epoch`.
    ready_at: AtomicU64,
    epoch: Instant,
    /// Set to 1 while open, when given.
    gauge: Option<IntGauge>,
    /// A flapping dependency opens and closes it many times a minute: one line a minute
    /// each way, with the count.
    opened: Repeats,
    closed: Repeats,
}

/// What the breaker lets one caller do.
pub enum Permit<'a> {
    /// Closed: go ahead.
    Pass,
    /// Go ahead as the one probe; record its result, then [`Probe::done`].
    Probe(Probe<'a>),
}

/// The right to probe, held by one caller. Dropped before [`Probe::done`] (the caller went
/// away), it hands the probe back: the breaker stays open with its cool-down over.
pub struct Probe<'a> {
    breaker: &'a CircuitBreaker,
}

impl Probe<'_> {
    /// The probe's result was recorded (`success` or `failure`): the probe is over.
    pub fn done(self) {
        std::mem::forget(self);
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.breaker.probe_abandoned();
    }
}

impl Permit<'_> {
    /// The call's result was recorded; a probe is over.
    pub fn done(self) {
        if let Permit::Probe(p) = self {
            p.done();
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker guarding `name`: `threshold` failures in a row open it for
    /// `cooldown`.
    pub fn new(
        name: impl Into<std::borrow::Cow<'static, str>>,
        threshold: u32,
        cooldown: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            threshold: threshold.max(1),
            cooldown,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            ready_at: AtomicU64::new(0),
            epoch: Instant::now(),
            gauge: None,
            opened: Repeats::new(),
            closed: Repeats::new(),
        }
    }

    /// Keeps `gauge` at 1 while the breaker is open, 0 while closed.
    pub fn with_gauge(mut self, gauge: IntGauge) -> Self {
        gauge.set(0);
        self.gauge = Some(gauge);
        self
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// May a call go through now? (A closed breaker does not read the clock.)
    pub fn admit(&self) -> Option<Permit<'_>> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(Permit::Pass),
            _ => self.admit_at(Instant::now()),
        }
    }

    /// May a call go through at `now`? Moves open → probing for exactly one caller once
    /// the cool-down is over; `None` while open, or while another caller probes.
    pub fn admit_at(&self, now: Instant) -> Option<Permit<'_>> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(Permit::Pass),
            OPEN => {
                let cooled = self.ms(now) >= self.ready_at.load(Ordering::Acquire);
                (cooled
                    && self
                        .state
                        .compare_exchange(OPEN, PROBING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok())
                .then_some(Permit::Probe(Probe { breaker: self }))
            }
            _ => None,
        }
    }

    /// True while open and cooling down at `now`: it holds every call back.
    pub fn holding_at(&self, now: Instant) -> bool {
        self.ready_at().is_some_and(|ready| now < ready)
    }

    /// While open, when the next probe may go.
    pub fn ready_at(&self) -> Option<Instant> {
        (self.state.load(Ordering::Acquire) == OPEN)
            .then(|| self.epoch + Duration::from_millis(self.ready_at.load(Ordering::Acquire)))
    }

    /// The dependency answered (even with a refusal): close.
    pub fn success(&self) {
        self.failures.store(0, Ordering::Release);
        if self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
            match self.closed.admit() {
                Some(r) if r.count > 1 => tracing::info!(breaker = %self.name, repeated = %r,
                    "circuit breaker closed: it answers again"),
                Some(_) => tracing::info!(breaker = %self.name,
                    "circuit breaker closed: it answers again"),
                None => {}
            }
            self.set_gauge(false);
        }
    }

    /// A call failed in a way that says the dependency is not well.
    pub fn failure(&self) {
        self.failure_at(Instant::now());
    }

    /// A call failed at `now`.
    pub fn failure_at(&self, now: Instant) {
        let state = self.state.load(Ordering::Acquire);
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if state != CLOSED || n >= self.threshold {
            let ready = self
                .ms(now)
                .saturating_add(self.cooldown.as_millis() as u64);
            self.ready_at.store(ready, Ordering::Release);
            if self.state.swap(OPEN, Ordering::AcqRel) == CLOSED {
                match self.opened.admit() {
                    Some(r) if r.count > 1 => tracing::warn!(breaker = %self.name, failures = n,
                        repeated = %r, "circuit breaker opened"),
                    Some(_) => {
                        tracing::warn!(breaker = %self.name, failures = n, "circuit breaker opened")
                    }
                    None => {}
                }
                self.set_gauge(true);
            }
        }
    }

    /// A probe ended without a result: open again with the cool-down already over, so the
    /// next call probes. Only a breaker still probing is moved: a result recorded since
    /// has decided already.
    fn probe_abandoned(&self) {
        if self
            .state
            .compare_exchange(PROBING, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.ready_at.store(0, Ordering::Release);
        }
    }

    fn set_gauge(&self, open: bool) {
        if let Some(g) = &self.gauge {
            g.set(i64::from(open));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_probe(p: &Option<Permit<'_>>) -> bool {
        matches!(p, Some(Permit::Probe(_)))
    }

    #[test]
    fn opens_after_the_threshold_holds_then_lets_one_probe() {
        let b = CircuitBreaker::new("t", 2, Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(matches!(b.admit_at(t0), Some(Permit::Pass)));
        b.failure_at(t0);
        assert!(
            matches!(b.admit_at(t0), Some(Permit::Pass)),
            "one failure is not a pattern"
        );
        b.failure_at(t0);
        assert!(b.admit_at(t0).is_none(), "open: nothing goes through");
        assert!(b.holding_at(t0));
        let later = t0 + Duration::from_secs(6);
        assert!(!b.holding_at(later), "cooled down: holding nothing back");
        let probe = b.admit_at(later);
        assert!(is_probe(&probe), "after the cool-down, one probe");
        assert!(b.admit_at(later).is_none(), "and only one");
        b.failure_at(later);
        if let Some(p) = probe {
            p.done();
        }
        assert!(b.admit_at(later).is_none(), "a failed probe re-opens it");
        let much_later = later + Duration::from_secs(6);
        let probe = b.admit_at(much_later);
        assert!(is_probe(&probe));
        b.success();
        if let Some(p) = probe {
            p.done();
        }
        assert!(matches!(b.admit_at(much_later), Some(Permit::Pass)));
    }

    #[test]
    fn an_abandoned_probe_is_handed_back_at_once() {
        let b = CircuitBreaker::new("t", 1, Duration::from_secs(3600));
        let t0 = Instant::now();
        b.failure_at(t0);
        let ready = b.ready_at().expect("open");
        let probe = b.admit_at(ready);
        assert!(is_probe(&probe));
        drop(probe);
        assert!(
            is_probe(&b.admit_at(Instant::now())),
            "the next caller probes without waiting out another cool-down"
        );
    }

    #[test]
    fn dropping_a_probe_after_its_result_changes_nothing() {
        let b = CircuitBreaker::new("t", 1, Duration::from_secs(3600));
        b.failure();
        let ready = b.ready_at().expect("open");
        let probe = b.admit_at(ready);
        b.failure_at(ready);
        drop(probe);
        assert!(
            b.holding_at(ready),
            "the failed probe's cool-down stands: {:?}",
            b.ready_at()
        );
    }

    #[test]
    fn the_gauge_follows_open_and_closed() {
        let g = IntGauge::new("g", "g").expect("gauge");
        let b = CircuitBreaker::new("t", 1, Duration::ZERO).with_gauge(g.clone());
        b.failure();
        assert_eq!(g.get(), 1);
        b.success();
        assert_eq!(g.get(), 0);
    }
}
