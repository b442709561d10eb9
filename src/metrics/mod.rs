//! Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Labels are low-cardinality only (sku, outcome, route, status class, step), never a user
//! or a token. Per-sale counters are resolved once at start-up, so the admission path pays
//! an atomic add, not a label lookup.

mod catalogue;

use catalogue::Spec;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every admission outcome, as the `outcome` label of `flashgate_admission_decisions_total`.
pub const ADMISSION_OUTCOMES: &[&str] = &[
    "admitted",
    "not_started",
    "closed",
    "paused",
    "sold_out",
    "rate_limited",
    "queue_full",
    "redirected",
    "held",
    "shutting_down",
    "invalid_token",
    "prequeued",
];

/// How a poll of another instance's ticket was answered, as the `result` label of
/// `flashgate_ticket_relays_total`: by its owner, refused by the poll limits, or (owner
/// gone or silent) from the store's record.
pub const RELAY_RESULTS: [&str; 4] = ["answered", "rate_limited", "owner_gone", "owner_silent"];

/// Every delivery attempt's result, as the `result` label of `flashgate_deliveries_total`.
pub const DELIVERY_RESULTS: [&str; 4] = ["confirmed", "refused", "retry", "unknown"];

/// What the backend answered a delivery attempt, as the `class` label of
/// `flashgate_delivery_answers_total`: the statuses that steer the deliverer apart.
pub const DELIVERY_ANSWER_CLASSES: [&str; 8] = [
    "2xx", "409", "429", "503", "4xx", "5xx", "timeout", "not_sent",
];

/// Latency buckets from 100 µs to 10 s.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
}

/// The gateway's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route and status class (`2xx` … `5xx`).
    pub requests: IntCounterVec,
    /// Requests answered with a 5xx, by route and exact status (502 apart from 503, …).
    pub server_errors: IntCounterVec,
    /// Admission decisions by sku and outcome.
    pub admission: IntCounterVec,
    /// Requests waiting in each sale's queue.
    pub queue_depth: IntGaugeVec,
    /// Each sale's queue capacity.
    pub queue_capacity: IntGaugeVec,
    /// Time admitted requests spent queued, by sku.
    pub queue_wait: HistogramVec,
    /// Each sale's line across the fleet: numbers drawn and not yet passed.
    pub line_length: IntGaugeVec,
    /// Each sale's line cursor.
    pub line_cursor: IntGaugeVec,
    /// Releases in local order because the line's cursor could not be moved, by sku.
    pub line_fallbacks: IntCounterVec,
    /// ETA error of released requests, by sku.
    pub eta_error: HistogramVec,
    /// Requests in each sale's pre-queue on this instance.
    pub prequeue_size: IntGaugeVec,
    /// How long each sale's opening of its pre-queue took, in seconds.
    pub prequeue_shuffle: GaugeVec,
    /// Drain rate per sale, the total across instances (requests per second).
    pub drain_rate: IntGaugeVec,
    /// This instance's measured share of each sale's drain rate.
    pub drain_share: IntGaugeVec,
    /// Requests released by each sale's drain (its rate is the actual drain rate).
    pub drained: IntCounterVec,
    /// Reserve step outcomes by sku.
    pub reserve: IntCounterVec,
    /// Stock left per sale, as last seen from the store.
    pub stock: IntGaugeVec,
    /// Store step latency by step.
    pub store_seconds: HistogramVec,
    /// Failed store calls by step.
    pub store_errors: IntCounterVec,
    /// Delivery attempts by result (`confirmed`, `refused`, `retry`).
    pub deliveries: IntCounterVec,
    /// Deliveries allowed in flight now.
    pub delivery_limit: IntGauge,
    /// The backend's no-load latency as the adaptive limit last measured it.
    pub delivery_noload: Gauge,
    /// Backend answers to delivery attempts by class ([`DELIVERY_ANSWER_CLASSES`]).
    pub delivery_answers: IntCounterVec,
    /// Times a Retry-After held every delivery back.
    pub delivery_holds: IntCounter,
    /// Orders compensated (stock put back), by sku.
    pub compensations: IntCounterVec,
    /// Orders cancelled after delivery, by sku and whether their units went back.
    pub cancellations: IntCounterVec,
    /// Reloads of the config file, by outcome.
    pub config_reloads: IntCounterVec,
    /// Polls of another instance's ticket, by result ([`RELAY_RESULTS`]).
    pub ticket_relays: IntCounterVec,
    /// Orders the deliverer holds that are not settled yet.
    pub outbox_backlog: IntGauge,
    /// Age of each sale's oldest order not delivered yet, seconds.
    pub outbox_lag: GaugeVec,
    /// The least an "auto" drain rate goes down to, per sale (0: fixed).
    pub drain_rate_min: IntGaugeVec,
    /// Proxied request latency to the response head, by status class.
    pub upstream_seconds: HistogramVec,
    /// Client connections open on the public listener.
    pub open_connections: IntGauge,
    /// `flashgate_connections_idle`.
    pub connections_idle: IntGauge,
    /// Gateway instances announced in the store, this one included.
    pub instances: IntGauge,
    /// 1, labelled with the version, the commit and the instance id.
    build_info: IntGaugeVec,
    /// Circuit breakers' state by breaker (`store`, `backend`): 1 open, 0 closed.
    pub breaker_open: IntGaugeVec,
    /// Admission decision latency (sampled on every decision).
    pub admission_seconds: Histogram,
    /// Times the store reported negative stock (the oversell guard tripped).
    pub oversell_guard: IntCounter,
    /// Orders the backend accepted whose stock had already been restored; should stay 0.
    pub delivery_conflicts: IntCounter,
    /// 1 while a sale is held because the store lost its state (stock not reloaded yet).
    pub sale_held: IntGaugeVec,
    /// Connections closed before any request, by listener and reason (`max_connections`,
    /// `per_ip`, `proxy_protocol`, `tls_handshake`).
    pub connections_refused: IntCounterVec,
    /// `flashgate_accept_errors_total{listener, reason}`.
    pub accept_errors: IntCounterVec,
    /// h2 connections sent GOAWAY by the gateway, by reason (`cancelled_streams`, `idle`).
    pub goaway: IntCounterVec,
}

fn counter(r: &Registry, spec: &Spec) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(spec.name, spec.help), spec.labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, spec: &Spec) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(spec.name, spec.help), spec.labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, spec: &Spec) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(spec.name, spec.help).buckets(latency_buckets()),
        spec.labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// A gauge of fractional values, by labels.
fn float_gauge(r: &Registry, spec: &Spec) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(spec.name, spec.help), spec.labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// A histogram of ratios, 1 % to 10×.
fn ratio_histogram(r: &Registry, spec: &Spec) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(spec.name, spec.help)
            .buckets(vec![0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]),
        spec.labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// A counter of a single series (no labels).
fn single_counter(r: &Registry, spec: &Spec) -> IntCounter {
    let c = IntCounter::new(spec.name, spec.help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// A gauge of a single series (no labels).
fn single_float_gauge(r: &Registry, spec: &Spec) -> Gauge {
    let g = Gauge::with_opts(Opts::new(spec.name, spec.help)).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn single_gauge(r: &Registry, spec: &Spec) -> IntGauge {
    let g = IntGauge::new(spec.name, spec.help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    // The names and label sets are constants of this file: registering cannot fail.
    pub fn new() -> Self {
        let r = Registry::new();
        // Resident memory, CPU seconds, open file descriptors and their limit, start time.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
        let admission_seconds = Histogram::with_opts(
            HistogramOpts::new(
                catalogue::ADMISSION_SECONDS.name,
                catalogue::ADMISSION_SECONDS.help,
            )
            .buckets(vec![
                1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 1e-4, 1e-3,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(admission_seconds.clone()))
            .expect("unique metric");
        let m = Self {
            connections_refused: counter(&r, &catalogue::CONNECTIONS_REFUSED),
            accept_errors: counter(&r, &catalogue::ACCEPT_ERRORS),
            goaway: counter(&r, &catalogue::GOAWAY),
            oversell_guard: single_counter(&r, &catalogue::OVERSELL_GUARD),
            delivery_conflicts: single_counter(&r, &catalogue::DELIVERY_CONFLICTS),
            sale_held: gauge(&r, &catalogue::SALE_HELD),
            server_errors: counter(&r, &catalogue::SERVER_ERRORS),
            requests: counter(&r, &catalogue::REQUESTS),
            admission: counter(&r, &catalogue::ADMISSION),
            queue_depth: gauge(&r, &catalogue::QUEUE_DEPTH),
            queue_capacity: gauge(&r, &catalogue::QUEUE_CAPACITY),
            queue_wait: histogram(&r, &catalogue::QUEUE_WAIT),
            line_length: gauge(&r, &catalogue::LINE_LENGTH),
            line_cursor: gauge(&r, &catalogue::LINE_CURSOR),
            line_fallbacks: counter(&r, &catalogue::LINE_FALLBACKS),
            eta_error: ratio_histogram(&r, &catalogue::ETA_ERROR),
            prequeue_size: gauge(&r, &catalogue::PREQUEUE_SIZE),
            prequeue_shuffle: float_gauge(&r, &catalogue::PREQUEUE_SHUFFLE),
            drain_rate: gauge(&r, &catalogue::DRAIN_RATE),
            drain_share: gauge(&r, &catalogue::DRAIN_SHARE),
            drained: counter(&r, &catalogue::DRAINED),
            reserve: counter(&r, &catalogue::RESERVE),
            stock: gauge(&r, &catalogue::STOCK),
            store_seconds: histogram(&r, &catalogue::STORE_SECONDS),
            store_errors: counter(&r, &catalogue::STORE_ERRORS),
            deliveries: counter(&r, &catalogue::DELIVERIES),
            delivery_limit: single_gauge(&r, &catalogue::DELIVERY_LIMIT),
            delivery_noload: single_float_gauge(&r, &catalogue::DELIVERY_NOLOAD),
            delivery_answers: counter(&r, &catalogue::DELIVERY_ANSWERS),
            delivery_holds: single_counter(&r, &catalogue::DELIVERY_HOLDS),
            compensations: counter(&r, &catalogue::COMPENSATIONS),
            cancellations: counter(&r, &catalogue::CANCELLATIONS),
            config_reloads: counter(&r, &catalogue::CONFIG_RELOADS),
            ticket_relays: counter(&r, &catalogue::TICKET_RELAYS),
            outbox_backlog: single_gauge(&r, &catalogue::OUTBOX_BACKLOG),
            outbox_lag: float_gauge(&r, &catalogue::OUTBOX_LAG),
            drain_rate_min: gauge(&r, &catalogue::DRAIN_RATE_MIN),
            upstream_seconds: histogram(&r, &catalogue::UPSTREAM_SECONDS),
            open_connections: single_gauge(&r, &catalogue::OPEN_CONNECTIONS),
            connections_idle: single_gauge(&r, &catalogue::CONNECTIONS_IDLE),
            instances: single_gauge(&r, &catalogue::INSTANCES),
            breaker_open: gauge(&r, &catalogue::BREAKER_OPEN),
            admission_seconds,
            build_info: gauge(&r, &catalogue::BUILD_INFO),
            registry: r,
        };
        // Series a dashboard or an alert reads exist from the start, at 0.
        for result in DELIVERY_RESULTS {
            m.deliveries.with_label_values(&[result]);
        }
        for class in DELIVERY_ANSWER_CLASSES {
            m.delivery_answers.with_label_values(&[class]);
        }
        for result in RELAY_RESULTS {
            m.ticket_relays.with_label_values(&[result]);
        }
        for outcome in ["applied", "refused"] {
            m.config_reloads.with_label_values(&[outcome]);
        }
        m
    }

    /// Records which build runs, as which instance (`cluster.instance_id`).
    pub fn set_build_info(&self, instance_id: &str) {
        self.build_info
            .with_label_values(&[crate::version::VERSION, crate::version::COMMIT, instance_id])
            .set(1);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding our own registry into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The `outcome` label's values of `flashgate_reserve_total`.
pub const RESERVE_OUTCOMES: &[&str] = &[
    "reserved",
    "sold_out",
    "duplicate",
    "invalid_token",
    "store_unavailable",
    "shutting_down",
    "closed",
];

/// One sale's counters, resolved once so the hot path only does atomic adds.
pub struct SaleCounters {
    /// Admission decisions, in the order of [`ADMISSION_OUTCOMES`].
    pub admission: Vec<IntCounter>,
    /// Requests released by the drain.
    pub drained: IntCounter,
    /// Time spent queued.
    pub queue_wait: Histogram,
    /// Outcomes of admitted requests, in the order of [`RESERVE_OUTCOMES`].
    pub reserve: Vec<IntCounter>,
    /// Orders compensated.
    pub compensations: IntCounter,
    /// Orders cancelled after delivery: their units back to stock, or not.
    pub cancellations: [IntCounter; 2],
    /// Releases in local order because the line's cursor could not be moved.
    pub line_fallbacks: IntCounter,
    /// ETA error of released requests.
    pub eta_error: Histogram,
    /// How long the opening of the pre-queue took.
    pub prequeue_shuffle: Gauge,
}

impl SaleCounters {
    /// Counts one admission decision; `outcome` is one of [`ADMISSION_OUTCOMES`].
    pub fn admission(&self, outcome: &str) {
        if let Some(i) = ADMISSION_OUTCOMES.iter().position(|o| *o == outcome) {
            self.admission[i].inc();
        }
    }

    /// Counts one admitted request's outcome; `outcome` is one of [`RESERVE_OUTCOMES`].
    pub fn reserve(&self, outcome: &str) {
        if let Some(i) = RESERVE_OUTCOMES.iter().position(|o| *o == outcome) {
            self.reserve[i].inc();
        }
    }
}

impl Metrics {
    /// Resolves the counters of sale `sku`.
    pub fn for_sale(&self, sku: &str) -> SaleCounters {
        SaleCounters {
            admission: ADMISSION_OUTCOMES
                .iter()
                .map(|o| self.admission.with_label_values(&[sku, o]))
                .collect(),
            drained: self.drained.with_label_values(&[sku]),
            queue_wait: self.queue_wait.with_label_values(&[sku]),
            reserve: RESERVE_OUTCOMES
                .iter()
                .map(|o| self.reserve.with_label_values(&[sku, o]))
                .collect(),
            compensations: self.compensations.with_label_values(&[sku]),
            cancellations: [
                self.cancellations.with_label_values(&[sku, "true"]),
                self.cancellations.with_label_values(&[sku, "false"]),
            ],
            line_fallbacks: self.line_fallbacks.with_label_values(&[sku]),
            eta_error: self.eta_error.with_label_values(&[sku]),
            prequeue_shuffle: self.prequeue_shuffle.with_label_values(&[sku]),
        }
    }
}

/// The `status` label's values, by class.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of a status code's class.
pub fn status_class_index(code: u16) -> usize {
    usize::from((code / 100).clamp(1, 5) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.requests.with_label_values(&["proxy", "2xx"]).inc();
        m.admission.with_label_values(&["s", "admitted"]).inc();
        m.queue_wait.with_label_values(&["s"]).observe(0.01);
        let text = String::from_utf8(m.render()).expect("utf-8");
        assert!(text.contains("flashgate_requests_total{route=\"proxy\",status=\"2xx\"} 1"));
        m.set_build_info("i-1");
        let text = String::from_utf8(m.render()).expect("utf-8");
        assert!(text.contains(&format!(
            "flashgate_build_info{{commit=\"{}\",instance_id=\"i-1\",version=\"{}\"}} 1",
            crate::version::COMMIT,
            crate::version::VERSION
        )));
        #[cfg(target_os = "linux")]
        for process in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_cpu_seconds_total",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{process} ")), "{process}");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            // The process collector's names are the standard ones every exporter shares.
            assert!(
                name.starts_with("flashgate_") || name.starts_with("process_"),
                "{name}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            if kind == "histogram" {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
    }
}
