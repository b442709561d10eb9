//! How many deliveries may be in flight at once: a fixed number, or a limit the deliverer
//! finds from the backend's own answers (`delivery.max_in_flight = "auto"`).
//!
//! The adaptive limit follows the gradient of the latency a batch of deliveries met against
//! the backend's no-load latency, as Netflix's Gradient2 and Envoy's adaptive concurrency
//! filter do. It starts at the minimum and doubles while latency stays near the no-load
//! figure (a slow start); from the first sign of queueing on, it moves to
//! `limit × gradient + √limit` a batch, smoothed, so it settles where the backend starts to
//! queue. A refusal that says "too much" (429, 503, 504) or a timeout halves it at once.
//! Now and then one batch goes at the minimum to measure the no-load latency afresh: a
//! backend that got slower (or faster) for good is measured again, not remembered.

use std::time::{Duration, Instant};

/// How a latency may grow over the no-load figure before it counts as queueing.
const TOLERANCE: f64 = 1.25;
/// Weight of a batch's figure in the smoothed limit.
const SMOOTHING: f64 = 0.2;
/// How often the no-load latency is measured again.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);

/// What one delivery attempt said about the backend's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Taken (2xx, 409): its latency is the backend's at this load.
    Answered,
    /// 429, 503, 504 or no answer in time: the backend takes too much already.
    Overloaded,
    /// Says nothing about its load: never reached it (no connection), or a refusal or an
    /// error answered without the work an order takes (a 422 in a millisecond would pass
    /// for the no-load latency).
    Unmeasured,
}

/// One attempt of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From the POST to its answer.
    pub latency: Duration,
    /// What it says about the load.
    pub load: Load,
}

/// The deliverer's limit on deliveries in flight.
#[derive(Debug)]
pub struct Limiter {
    /// The limit now (fractional, so that small steps add up).
    limit: f64,
    /// Bounds of an adaptive limit; equal for a fixed one.
    min: usize,
    cap: usize,
    /// The backend's latency with nothing queued, as last measured.
    noload: Option<Duration>,
    /// Doubling until the first sign of queueing.
    slow_start: bool,
    /// When the no-load latency is measured next; the batch then goes at the minimum.
    probe_at: Option<Instant>,
    probing: bool,
}

impl Limiter {
    /// Always `n` (at least one).
    pub fn fixed(n: usize) -> Self {
        let n = n.max(1);
        Self {
            limit: n as f64,
            min: n,
            cap: n,
            noload: None,
            slow_start: false,
            probe_at: None,
            probing: false,
        }
    }

    /// Found between `min` and `cap`, starting at `min`.
    pub fn adaptive(min: usize, cap: usize, now: Instant) -> Self {
        let min = min.max(1);
        let cap = cap.max(min);
        Self {
            limit: min as f64,
            min,
            cap,
            noload: None,
            slow_start: true,
            probe_at: Some(now + PROBE_EVERY),
            probing: false,
        }
    }

    /// Whether the limit is found rather than set.
    pub fn is_adaptive(&self) -> bool {
        self.min != self.cap
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        (self.limit.round() as usize).clamp(self.min, self.cap)
    }

    /// The backend's no-load latency as last measured.
    pub fn noload(&self) -> Option<Duration> {
        self.noload
    }

    /// How many deliveries the next batch may hold: the limit, or the minimum when the
    /// no-load latency is due to be measured again.
    pub fn allowed(&mut self, now: Instant) -> usize {
        if self.probe_at.is_some_and(|at| now >= at) {
            self.probing = true;
            return self.min;
        }
        self.limit()
    }

    /// Takes in a batch: `offered` deliveries were due (more than went, if the limit held
    /// some back), `samples` what those that went met.
    pub fn record(&mut self, samples: &[Sample], offered: usize, now: Instant) {
        if !self.is_adaptive() || samples.is_empty() {
            return;
        }
        let mut answered: Vec<Duration> = samples
            .iter()
            .filter(|s| s.load == Load::Answered)
            .map(|s| s.latency)
            .collect();
        answered.sort_unstable();
        if self.probing {
            self.probing = false;
            self.probe_at = Some(now + PROBE_EVERY);
            if let Some(&least) = answered.first() {
                self.noload = Some(least);
            }
            return;
        }
        if samples.iter().any(|s| s.load == Load::Overloaded) {
            self.slow_start = false;
            self.limit = (self.limit / 2.0).max(self.min as f64);
            return;
        }
        let (Some(&least), Some(&median)) = (answered.first(), answered.get(answered.len() / 2))
        else {
            return;
        };
        let noload = self.noload.map_or(least, |n| n.min(least));
        self.noload = Some(noload);
        let gradient = match median.as_secs_f64() {
            rtt if rtt > 0.0 => (TOLERANCE * noload.as_secs_f64() / rtt).clamp(0.5, 1.0),
            _ => 1.0,
        };
        // A batch that did not fill the limit says nothing about a higher one.
        let filled = offered as f64 >= self.limit * 0.5;
        if self.slow_start && gradient >= 1.0 {
            if filled {
                self.limit = (self.limit * 2.0).min(self.cap as f64);
            }
            return;
        }
        self.slow_start = false;
        let headroom = if filled { self.limit.sqrt() } else { 0.0 };
        let target = self.limit * gradient + headroom;
        let next = self.limit * (1.0 - SMOOTHING) + target * SMOOTHING;
        self.limit = next.clamp(self.min as f64, self.cap as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn batch(n: usize, latency: Duration) -> Vec<Sample> {
        vec![
            Sample {
                latency,
                load: Load::Answered,
            };
            n
        ]
    }

    /// A backend of `workers` serving each order in `service`, queueing the rest: the
    /// median latency a batch of `n` meets.
    fn queueing(n: usize, workers: usize, service: Duration) -> Duration {
        let rounds = n.div_ceil(workers).max(1);
        service * (rounds as u32).div_ceil(2).max(1)
    }

    #[test]
    fn a_fixed_limit_never_moves() {
        let now = Instant::now();
        let mut l = Limiter::fixed(16);
        assert_eq!(l.allowed(now), 16);
        l.record(&batch(16, ms(500)), 100, now);
        l.record(
            &[Sample {
                latency: ms(1),
                load: Load::Overloaded,
            }],
            100,
            now,
        );
        assert_eq!(l.limit(), 16);
        assert!(!l.is_adaptive());
    }

    #[test]
    fn the_limit_settles_where_the_backend_starts_to_queue() {
        let now = Instant::now();
        let mut l = Limiter::adaptive(1, 256, now);
        for _ in 0..200 {
            let n = l.allowed(now);
            l.record(&batch(n, queueing(n, 4, ms(50))), 1000, now);
        }
        let settled = l.limit();
        assert!((4..=12).contains(&settled), "{settled}");
        assert_eq!(l.noload(), Some(ms(50)));
    }

    #[test]
    fn an_overload_halves_the_limit_and_a_quiet_backend_lets_it_grow_back() {
        let now = Instant::now();
        let mut l = Limiter::adaptive(2, 256, now);
        for _ in 0..6 {
            let n = l.allowed(now);
            l.record(&batch(n, ms(10)), 1000, now);
        }
        let high = l.limit();
        assert!(high >= 64, "slow start doubles: {high}");
        let refused = Sample {
            latency: ms(1),
            load: Load::Overloaded,
        };
        l.record(&[refused], 1000, now);
        assert_eq!(l.limit(), high / 2);
        for _ in 0..20 {
            l.record(&[refused], 1000, now);
        }
        assert_eq!(l.limit(), 2, "never below the minimum");
        for _ in 0..100 {
            let n = l.allowed(now);
            l.record(&batch(n, ms(10)), 1000, now);
        }
        assert!(l.limit() > 20, "grows back: {}", l.limit());
    }

    #[test]
    fn a_batch_that_did_not_fill_the_limit_does_not_raise_it() {
        let now = Instant::now();
        let mut l = Limiter::adaptive(4, 256, now);
        for _ in 0..50 {
            l.record(&batch(1, ms(10)), 1, now);
        }
        assert_eq!(l.limit(), 4);
    }

    #[test]
    fn a_fast_refusal_is_no_latency_measure() {
        // Adversarial review: 422s answered in a millisecond became the no-load latency,
        // and every batch of 100 ms orders then looked queued: the limit sat at 4.
        let now = Instant::now();
        let mut l = Limiter::adaptive(1, 256, now);
        for _ in 0..30 {
            let n = l.allowed(now);
            let mut b = batch(n, ms(100));
            b.push(Sample {
                latency: ms(1),
                load: Load::Unmeasured,
            });
            l.record(&b, 1000, now);
        }
        assert_eq!(l.noload(), Some(ms(100)));
        assert!(l.limit() > 32, "{}", l.limit());
    }

    #[test]
    fn the_no_load_latency_is_measured_again_at_the_minimum() {
        let start = Instant::now();
        let mut l = Limiter::adaptive(1, 64, start);
        l.record(&batch(1, ms(10)), 10, start);
        assert_eq!(l.noload(), Some(ms(10)));
        let later = start + PROBE_EVERY;
        assert_eq!(l.allowed(later), 1, "the probe goes alone");
        l.record(&batch(1, ms(40)), 10, later);
        assert_eq!(l.noload(), Some(ms(40)), "the backend got slower for good");
        assert_eq!(l.allowed(later), l.limit(), "one probe a period");
    }
}
