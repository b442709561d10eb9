//! Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Labels are low-cardinality only (sku, outcome, route, status class, step), never a user
//! or a token. Per-sale counters are resolved once at start-up, so the admission path pays
//! an atomic add, not a label lookup.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Orders compensated (stock put back), by sku.
    pub compensations: IntCounterVec,
    /// Orders the deliverer holds that are not settled yet.
    pub outbox_backlog: IntGauge,
    /// Proxied request latency to the response head, by status class.
    pub upstream_seconds: HistogramVec,
    /// Client connections open on the public listener.
    pub open_connections: IntGauge,
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
    /// h2 connections sent GOAWAY by the gateway, by reason (`cancelled_streams`, `idle`).
    pub goaway: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(latency_buckets()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
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
        let open_connections = IntGauge::new(
            "flashgate_open_connections",
            "Client connections open on the public listener",
        )
        .expect("valid metric");
        r.register(Box::new(open_connections.clone()))
            .expect("unique metric");
        let instances = IntGauge::new(
            "flashgate_instances",
            "Gateway instances announced in the store, this one included",
        )
        .expect("valid metric");
        r.register(Box::new(instances.clone()))
            .expect("unique metric");
        let outbox_backlog = IntGauge::new(
            "flashgate_outbox_backlog",
            "Reserved orders the deliverer holds that are not delivered or compensated yet",
        )
        .expect("valid metric");
        r.register(Box::new(outbox_backlog.clone()))
            .expect("unique metric");
        let admission_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "flashgate_admission_decision_seconds",
                "Time to decide admit-or-refuse for an order, in process",
            )
            .buckets(vec![
                1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 1e-4, 1e-3,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(admission_seconds.clone()))
            .expect("unique metric");
        let oversell_guard = IntCounter::new(
            "flashgate_oversell_guard_trips_total",
            "Times the store reported negative stock; should stay 0",
        )
        .expect("valid metric");
        r.register(Box::new(oversell_guard.clone()))
            .expect("unique metric");
        let delivery_conflicts = IntCounter::new(
            "flashgate_delivery_conflicts_total",
            "Orders the backend accepted whose stock had already been restored; should stay 0",
        )
        .expect("valid metric");
        r.register(Box::new(delivery_conflicts.clone()))
            .expect("unique metric");
        Self {
            connections_refused: counter(
                &r,
                "flashgate_connections_refused_total",
                "Connections closed before any request, by listener and reason",
                &["listener", "reason"],
            ),
            goaway: counter(
                &r,
                "flashgate_h2_goaway_total",
                "h2 connections the gateway sent GOAWAY, by reason",
                &["reason"],
            ),
            oversell_guard,
            delivery_conflicts,
            sale_held: gauge(
                &r,
                "flashgate_sale_held",
                "1 while the sale is held: the store lost its state and stock is not reloaded",
                &["sku"],
            ),
            server_errors: counter(
                &r,
                "flashgate_server_errors_total",
                "Requests answered with a 5xx status, by route and exact status",
                &["route", "status"],
            ),
            requests: counter(
                &r,
                "flashgate_requests_total",
                "Requests answered, by route and status class",
                &["route", "status"],
            ),
            admission: counter(
                &r,
                "flashgate_admission_decisions_total",
                "Admission decisions by sale and outcome",
                &["sku", "outcome"],
            ),
            queue_depth: gauge(
                &r,
                "flashgate_queue_depth",
                "Requests waiting in the sale's queue",
                &["sku"],
            ),
            queue_capacity: gauge(
                &r,
                "flashgate_queue_capacity",
                "Most requests the sale's queue holds",
                &["sku"],
            ),
            queue_wait: histogram(
                &r,
                "flashgate_queue_wait_seconds",
                "Time admitted requests spent queued",
                &["sku"],
            ),
            drain_rate: gauge(
                &r,
                "flashgate_drain_rate_configured",
                "Drain rate, requests per second, the total across the instances sharing the store",
                &["sku"],
            ),
            drain_share: gauge(
                &r,
                "flashgate_drain_share",
                "Requests per second this instance's drain achieved while it had requests queued (its share of the sale's total rate)",
                &["sku"],
            ),
            drained: counter(
                &r,
                "flashgate_drained_total",
                "Requests released by the sale's drain",
                &["sku"],
            ),
            reserve: counter(
                &r,
                "flashgate_reserve_outcomes_total",
                "Reserve step outcomes",
                &["sku", "outcome"],
            ),
            stock: gauge(
                &r,
                "flashgate_stock_remaining",
                "Stock left, as last seen from the store",
                &["sku"],
            ),
            store_seconds: histogram(
                &r,
                "flashgate_store_step_seconds",
                "Store step latency",
                &["step"],
            ),
            store_errors: counter(
                &r,
                "flashgate_store_errors_total",
                "Failed store calls",
                &["step"],
            ),
            deliveries: counter(
                &r,
                "flashgate_deliveries_total",
                "Delivery attempts by result",
                &["result"],
            ),
            compensations: counter(
                &r,
                "flashgate_compensations_total",
                "Orders compensated (stock put back)",
                &["sku"],
            ),
            outbox_backlog,
            upstream_seconds: histogram(
                &r,
                "flashgate_upstream_response_seconds",
                "Proxied requests: time to the upstream's response head",
                &["status"],
            ),
            open_connections,
            instances,
            breaker_open: gauge(
                &r,
                "flashgate_circuit_breaker_open",
                "1 while the breaker is open",
                &["breaker"],
            ),
            admission_seconds,
            build_info: gauge(
                &r,
                "flashgate_build_info",
                "1, labelled with the version and commit running and the instance's id",
                &["version", "commit", "instance_id"],
            ),
            registry: r,
        }
    }

    /// Records which build runs, as which instance (`cluster.instance_id`).
    pub fn set_build_info(&self, instance_id: &str) {
        self.build_info
            .with_label_values(&[crate::build::VERSION, crate::build::COMMIT, instance_id])
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
            crate::build::COMMIT,
            crate::build::VERSION
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
