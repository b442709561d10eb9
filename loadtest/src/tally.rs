//! What the crowd saw: answers by route and code, latency histograms, a per-second timeline.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{Answer, NoAnswer};

/// Which request an answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `POST /sale/{sku}/token`.
    Token,
    /// `POST /sale/{sku}/order`, first submissions, clicks and retries.
    Order,
    /// `GET /sale/tickets/{ticket}`.
    Poll,
    /// `POST /sale/{sku}/order` again after the outcome, same token.
    Replay,
}

/// Latency series kept as HDR histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// Token requests.
    Token,
    /// Order requests refused (the crowd's "no").
    OrderRefused,
    /// Order requests admitted: 202 queued, or in wait mode the outcome itself.
    OrderAdmitted,
    /// Ticket polls.
    Poll,
    /// A user's whole journey, arrival to final outcome.
    EndToEnd,
}

impl Route {
    /// The route's name in reports (as in the JSON report).
    pub fn name(self) -> &'static str {
        match self {
            Route::Token => "token",
            Route::Order => "order",
            Route::Poll => "poll",
            Route::Replay => "replay",
        }
    }
}

impl Series {
    /// The series' name in reports (as in the JSON report).
    pub fn name(self) -> &'static str {
        match self {
            Series::Token => "token",
            Series::OrderRefused => "order_refused",
            Series::OrderAdmitted => "order_admitted",
            Series::Poll => "poll",
            Series::EndToEnd => "end_to_end",
        }
    }
}

const SERIES: [Series; 5] = [
    Series::Token,
    Series::OrderRefused,
    Series::OrderAdmitted,
    Series::Poll,
    Series::EndToEnd,
];

/// One second of the run, as the crowd saw it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Second {
    /// Order answers that admitted the request.
    pub admitted: u64,
    /// Order answers that refused it.
    pub refused: u64,
    /// Reservations learned (order ids).
    pub reserved: u64,
}

struct Inner {
    answers: BTreeMap<(Route, String), u64>,
    histograms: Vec<Histogram<u64>>,
    timeline: Vec<Second>,
}

/// The shared tally every user writes into.
pub struct Tally {
    start: Instant,
    inner: Mutex<Inner>,
}

/// Percentiles of one latency series, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// The series.
    pub series: Series,
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Tally {
    /// An empty tally whose timeline starts now.
    pub fn new(start: Instant) -> Self {
        let histograms = SERIES
            .iter()
            .map(|_| {
                // 1 µs to 10 min at 3 significant digits.
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
            })
            .collect();
        Self {
            start,
            inner: Mutex::new(Inner {
                answers: BTreeMap::new(),
                histograms,
                timeline: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one request's result under `route`; an answer's latency goes to `series`.
    pub fn answer(&self, route: Route, result: &Result<Answer, NoAnswer>, series: Series) {
        let code = match result {
            Ok(a) => a.code(),
            Err(NoAnswer::Timeout) => "no_answer_timeout".into(),
            Err(NoAnswer::Transport(_)) => "no_answer_transport".into(),
        };
        let mut inner = self.lock();
        *inner.answers.entry((route, code)).or_default() += 1;
        if let Ok(a) = result {
            record(&mut inner.histograms[series as usize], a.took);
        }
    }

    /// Records an answer under a code of the caller's choosing (a ticket's status, say).
    pub fn answer_as(&self, route: Route, code: String, took: Duration, series: Series) {
        let mut inner = self.lock();
        *inner.answers.entry((route, code)).or_default() += 1;
        record(&mut inner.histograms[series as usize], took);
    }

    /// Records a user's whole journey.
    pub fn journey(&self, took: Duration) {
        record(&mut self.lock().histograms[Series::EndToEnd as usize], took);
    }

    /// Counts an order answer in the timeline.
    pub fn second(&self, at: Instant, f: impl FnOnce(&mut Second)) {
        let index = at.saturating_duration_since(self.start).as_secs() as usize;
        let mut inner = self.lock();
        if inner.timeline.len() <= index {
            inner.timeline.resize(index + 1, Second::default());
        }
        f(&mut inner.timeline[index]);
    }

    /// Answers counted by route and code.
    pub fn answers(&self) -> BTreeMap<(Route, String), u64> {
        self.lock().answers.clone()
    }

    /// Answers of `route` with `code`.
    pub fn count(&self, route: Route, code: &str) -> u64 {
        self.lock()
            .answers
            .get(&(route, code.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests that got no answer at all.
    pub fn unanswered(&self) -> u64 {
        self.lock()
            .answers
            .iter()
            .filter(|((_, code), _)| code.starts_with("no_answer"))
            .map(|(_, n)| n)
            .sum()
    }

    /// The per-second timeline.
    pub fn timeline(&self) -> Vec<Second> {
        self.lock().timeline.clone()
    }

    /// Percentiles of every series that has samples.
    pub fn percentiles(&self) -> Vec<Percentiles> {
        let inner = self.lock();
        SERIES
            .iter()
            .zip(&inner.histograms)
            .filter(|(_, h)| !h.is_empty())
            .map(|(series, h)| {
                let ms = |micros: u64| micros as f64 / 1000.0;
                Percentiles {
                    series: *series,
                    count: h.len(),
                    p50_ms: ms(h.value_at_quantile(0.50)),
                    p90_ms: ms(h.value_at_quantile(0.90)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    p999_ms: ms(h.value_at_quantile(0.999)),
                    max_ms: ms(h.max()),
                }
            })
            .collect()
    }
}

fn record(h: &mut Histogram<u64>, took: Duration) {
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(micros);
}
