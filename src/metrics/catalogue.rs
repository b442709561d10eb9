//! Every metric's name, help text and label names, in one place (docs/metrics.md lists
//! them for operators).

/// A metric's name, help and label names.
pub struct Spec {
    /// Its name, `flashgate_…`.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its label names (none for a single series).
    pub labels: &'static [&'static str],
}

/// `flashgate_connections_idle`.
pub const CONNECTIONS_IDLE: Spec = Spec {
    name: "flashgate_connections_idle",
    help: "Open HTTP/1 client connections set aside between requests (a socket and a small task each, no buffers)",
    labels: &[],
};

/// `flashgate_open_connections`.
pub const OPEN_CONNECTIONS: Spec = Spec {
    name: "flashgate_open_connections",
    help: "Client connections open on the public listener",
    labels: &[],
};

/// `flashgate_instances`.
pub const INSTANCES: Spec = Spec {
    name: "flashgate_instances",
    help: "Gateway instances announced in the store, this one included",
    labels: &[],
};

/// `flashgate_outbox_backlog`.
pub const OUTBOX_BACKLOG: Spec = Spec {
    name: "flashgate_outbox_backlog",
    help: "Reserved orders the deliverer holds that are not delivered or compensated yet",
    labels: &[],
};

/// `flashgate_admission_decision_seconds`.
pub const ADMISSION_SECONDS: Spec = Spec {
    name: "flashgate_admission_decision_seconds",
    help: "Time to decide admit-or-refuse for an order, in process",
    labels: &[],
};

/// `flashgate_oversell_guard_trips_total`.
pub const OVERSELL_GUARD: Spec = Spec {
    name: "flashgate_oversell_guard_trips_total",
    help: "Times the store reported negative stock; should stay 0",
    labels: &[],
};

/// `flashgate_delivery_conflicts_total`.
pub const DELIVERY_CONFLICTS: Spec = Spec {
    name: "flashgate_delivery_conflicts_total",
    help: "Orders the backend accepted whose stock had already been restored; should stay 0",
    labels: &[],
};

/// `flashgate_connections_refused_total`.
pub const CONNECTIONS_REFUSED: Spec = Spec {
    name: "flashgate_connections_refused_total",
    help: "Connections closed before any request, by listener and reason",
    labels: &["listener", "reason"],
};

/// `flashgate_accept_errors_total`.
pub const ACCEPT_ERRORS: Spec = Spec {
    name: "flashgate_accept_errors_total",
    help: "Failed accept calls, by listener and reason (open_files: the open-files limit, after which accepting backs off briefly)",
    labels: &["listener", "reason"],
};

/// `flashgate_h2_goaway_total`.
pub const GOAWAY: Spec = Spec {
    name: "flashgate_h2_goaway_total",
    help: "h2 connections the gateway sent GOAWAY, by reason",
    labels: &["reason"],
};

/// `flashgate_sale_held`.
pub const SALE_HELD: Spec = Spec {
    name: "flashgate_sale_held",
    help: "1 while the sale is held: the store lost its state and stock is not reloaded",
    labels: &["sku"],
};

/// `flashgate_server_errors_total`.
pub const SERVER_ERRORS: Spec = Spec {
    name: "flashgate_server_errors_total",
    help: "Requests answered with a 5xx status, by route and exact status",
    labels: &["route", "status"],
};

/// `flashgate_requests_total`.
pub const REQUESTS: Spec = Spec {
    name: "flashgate_requests_total",
    help: "Requests answered, by route and status class",
    labels: &["route", "status"],
};

/// `flashgate_admission_decisions_total`.
pub const ADMISSION: Spec = Spec {
    name: "flashgate_admission_decisions_total",
    help: "Admission decisions by sale and outcome",
    labels: &["sku", "outcome"],
};

/// `flashgate_queue_depth`.
pub const QUEUE_DEPTH: Spec = Spec {
    name: "flashgate_queue_depth",
    help: "Requests waiting in the sale's queue",
    labels: &["sku"],
};

/// `flashgate_queue_capacity`.
pub const QUEUE_CAPACITY: Spec = Spec {
    name: "flashgate_queue_capacity",
    help: "Most requests the sale's queue holds",
    labels: &["sku"],
};

/// `flashgate_queue_wait_seconds`.
pub const QUEUE_WAIT: Spec = Spec {
    name: "flashgate_queue_wait_seconds",
    help: "Time admitted requests spent queued",
    labels: &["sku"],
};

/// `flashgate_line_length`.
pub const LINE_LENGTH: Spec = Spec {
    name: "flashgate_line_length",
    help:
        "Requests in the sale's line across the fleet, not yet passed by its cursor (shared store)",
    labels: &["sku"],
};

/// `flashgate_line_cursor`.
pub const LINE_CURSOR: Spec = Spec {
    name: "flashgate_line_cursor",
    help: "The fleet line's cursor: requests numbered up to it may be released (shared store)",
    labels: &["sku"],
};

/// `flashgate_line_fallbacks_total`.
pub const LINE_FALLBACKS: Spec = Spec {
    name: "flashgate_line_fallbacks_total",
    help: "Times the drain released requests in local order because the store could not move the line's cursor",
    labels: &["sku"],
};

/// `flashgate_prequeue_size`.
pub const PREQUEUE_SIZE: Spec = Spec {
    name: "flashgate_prequeue_size",
    help: "Requests in the sale's pre-queue on this instance, not yet released (before the opening: every one that joined)",
    labels: &["sku"],
};

/// `flashgate_prequeue_shuffle_seconds`.
pub const PREQUEUE_SHUFFLE: Spec = Spec {
    name: "flashgate_prequeue_shuffle_seconds",
    help: "How long this instance's opening of the pre-queue took: its members ranked in the shuffled order (the store's, with a shared store), those beyond the places kept told sold out, the others placed",
    labels: &["sku"],
};

/// `flashgate_eta_error_ratio`.
pub const ETA_ERROR: Spec = Spec {
    name: "flashgate_eta_error_ratio",
    help: "How far the wait promised at admission was from the real one: |real - promised| / real",
    labels: &["sku"],
};

/// `flashgate_drain_rate_configured`.
pub const DRAIN_RATE: Spec = Spec {
    name: "flashgate_drain_rate_configured",
    help: "Drain rate, requests per second, the total across the instances sharing the store",
    labels: &["sku"],
};

/// `flashgate_drain_share`.
pub const DRAIN_SHARE: Spec = Spec {
    name: "flashgate_drain_share",
    help: "Requests per second this instance's drain achieved while it had requests queued (its share of the sale's total rate)",
    labels: &["sku"],
};

/// `flashgate_drained_total`.
pub const DRAINED: Spec = Spec {
    name: "flashgate_drained_total",
    help: "Requests released by the sale's drain",
    labels: &["sku"],
};

/// `flashgate_reserve_outcomes_total`.
pub const RESERVE: Spec = Spec {
    name: "flashgate_reserve_outcomes_total",
    help: "Reserve step outcomes",
    labels: &["sku", "outcome"],
};

/// `flashgate_stock_remaining`.
pub const STOCK: Spec = Spec {
    name: "flashgate_stock_remaining",
    help: "Stock left, as last seen from the store",
    labels: &["sku"],
};

/// `flashgate_store_step_seconds`.
pub const STORE_SECONDS: Spec = Spec {
    name: "flashgate_store_step_seconds",
    help: "Store step latency",
    labels: &["step"],
};

/// `flashgate_store_errors_total`.
pub const STORE_ERRORS: Spec = Spec {
    name: "flashgate_store_errors_total",
    help: "Failed store calls",
    labels: &["step"],
};

/// `flashgate_deliveries_total`.
pub const DELIVERIES: Spec = Spec {
    name: "flashgate_deliveries_total",
    help: "Delivery attempts by result",
    labels: &["result"],
};

/// `flashgate_drain_rate_min`.
pub const DRAIN_RATE_MIN: Spec = Spec {
    name: "flashgate_drain_rate_min",
    help: "With drain_rate = \"auto\": the least the steered rate goes down to (queue.drain_min); 0 for a fixed rate",
    labels: &["sku"],
};

/// `flashgate_outbox_lag_seconds`.
pub const OUTBOX_LAG: Spec = Spec {
    name: "flashgate_outbox_lag_seconds",
    help: "Age of the sale's oldest reserved order the backend has not taken yet (fleet-wide with a shared store); 0 when none",
    labels: &["sku"],
};

/// `flashgate_delivery_limit`.
pub const DELIVERY_LIMIT: Spec = Spec {
    name: "flashgate_delivery_limit",
    help: "Deliveries the deliverer lets be in flight at once now (delivery.max_in_flight, or the limit found)",
    labels: &[],
};

/// `flashgate_delivery_noload_seconds`.
pub const DELIVERY_NOLOAD: Spec = Spec {
    name: "flashgate_delivery_noload_seconds",
    help: "The backend's latency with nothing queued, as the adaptive limit last measured it",
    labels: &[],
};

/// `flashgate_delivery_answers_total`.
pub const DELIVERY_ANSWERS: Spec = Spec {
    name: "flashgate_delivery_answers_total",
    help: "What the backend answered delivery attempts, by class",
    labels: &["class"],
};

/// `flashgate_delivery_holds_total`.
pub const DELIVERY_HOLDS: Spec = Spec {
    name: "flashgate_delivery_holds_total",
    help: "Times a backend's Retry-After held every delivery back",
    labels: &[],
};

/// `flashgate_ticket_relays_total`.
pub const TICKET_RELAYS: Spec = Spec {
    name: "flashgate_ticket_relays_total",
    help: "Polls of another instance's ticket, by how they were answered",
    labels: &["result"],
};

/// `flashgate_compensations_total`.
pub const COMPENSATIONS: Spec = Spec {
    name: "flashgate_compensations_total",
    help: "Orders compensated (stock put back)",
    labels: &["sku"],
};

/// `flashgate_config_reloads_total`.
pub const CONFIG_RELOADS: Spec = Spec {
    name: "flashgate_config_reloads_total",
    help: "Reloads of the config file (SIGHUP), by outcome: applied or refused",
    labels: &["outcome"],
};

/// `flashgate_cancellations_total`.
pub const CANCELLATIONS: Spec = Spec {
    name: "flashgate_cancellations_total",
    help: "Orders cancelled after delivery (unpaid), by whether their units went back to stock",
    labels: &["sku", "restocked"],
};

/// `flashgate_upstream_response_seconds`.
pub const UPSTREAM_SECONDS: Spec = Spec {
    name: "flashgate_upstream_response_seconds",
    help: "Proxied requests: time to the upstream's response head",
    labels: &["status"],
};

/// `flashgate_circuit_breaker_open`.
pub const BREAKER_OPEN: Spec = Spec {
    name: "flashgate_circuit_breaker_open",
    help: "1 while the breaker is open",
    labels: &["breaker"],
};

/// `flashgate_build_info`.
pub const BUILD_INFO: Spec = Spec {
    name: "flashgate_build_info",
    help: "1, labelled with the version and commit running and the instance's id",
    labels: &["version", "commit", "instance_id"],
};
