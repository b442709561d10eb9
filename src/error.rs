//! The gateway's refusals and failures, mapped to the public contract's status codes and
//! stable error codes in one place.

use std::time::Duration;

use http::StatusCode;

/// Every way a request can be refused or fail at the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The request body is larger than `server.body_limit`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The request header block is larger than `server.max_header_size`.
    #[error("the request header is larger than {limit} bytes")]
    HeaderTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// No route on the admin listener matches.
    #[error("no such route")]
    NotFound,
    /// The upstream refused the connection, reset it, or sent a malformed answer.
    #[error("the upstream is unavailable")]
    UpstreamUnavailable,
    /// Every connection the gateway may open to the upstream is busy
    /// (`upstream.max_connections`); nothing was sent.
    #[error("the upstream is busy, retry shortly")]
    UpstreamBusy,
    /// The upstream did not answer with a response head in time.
    #[error("the upstream did not answer within {}", humantime::format_duration(*.0))]
    UpstreamTimeout(Duration),
    /// The listener already holds `server.max_connections` connections.
    #[error("connection limit reached, retry shortly")]
    TooManyConnections,
    /// The gateway is not ready to serve (admin `/readyz`).
    #[error("not ready: {0}")]
    NotReady(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The identity header is absent.
    #[error("the identity header is missing")]
    MissingIdentity,
    /// The identity header is malformed, or its signature does not match.
    #[error("the identity header is malformed or its signature does not match")]
    BadIdentity,
    /// No sale has this sku.
    #[error("no sale `{0}`")]
    UnknownSale(String),
    /// The sale has not started.
    #[error("the sale has not started")]
    SaleNotStarted {
        /// When it starts, RFC 3339.
        starts_at: String,
    },
    /// The sale has ended.
    #[error("the sale has ended")]
    SaleClosed,
    /// An operator paused the sale.
    #[error("the sale is paused")]
    SalePaused,
    /// The user already holds the most units allowed.
    #[error("you already hold the most units allowed in this sale")]
    Duplicate,
    /// The user holds a place in the sale's pre-queue already, under another token.
    #[error("you hold a place in this sale's pre-queue already; follow its ticket")]
    PrequeuePlaceTaken {
        /// The ticket of the user's place.
        ticket: String,
    },
    /// No stock is left (or none that could reach this request).
    #[error("sold out")]
    SoldOut,
    /// The token is unknown, expired, or another user's or sale's.
    #[error("the sale token is unknown, expired, or not yours")]
    InvalidToken,
    /// Too many requests from this user or address.
    #[error("too many requests, slow down")]
    RateLimited {
        /// Seconds until a request would pass.
        retry_after: u32,
    },
    /// The sale's queue is full.
    #[error("the queue is full, retry shortly")]
    QueueFull {
        /// Seconds a retry should wait.
        retry_after: u32,
    },
    /// The store did not answer.
    #[error("the order store is unavailable, retry shortly")]
    StoreUnavailable,
    /// The gateway is shutting down and did not process this request.
    #[error("the gateway is shutting down, retry shortly")]
    ShuttingDown,
    /// The admin API needs a valid bearer token.
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    /// No ticket has this id (or it expired).
    #[error("unknown or expired ticket")]
    UnknownTicket,
    /// The instance that held this queued request stopped before deciding it: nothing was
    /// reserved for it, and submitting the same token again is safe.
    #[error("the request behind this ticket was lost with the instance holding it; submit your token again")]
    TicketLost,
    /// The instance holding this ticket did not answer; it may still decide it.
    #[error("the instance holding this ticket did not answer, retry shortly")]
    TicketUnavailable,
    /// The request body did not arrive within `server.body_timeout`.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// The sale is held: the store lost its state and an operator has not loaded stock yet.
    #[error("the sale is held until its stock is loaded again, retry later")]
    SaleHeld,
    /// The order was reserved but the backend did not take it; its stock went back.
    #[error("the order could not be delivered; its stock was restored, you may buy again")]
    DeliveryFailed,
    /// The backend cancelled the order after delivery (unpaid); its units went back.
    #[error("the order was cancelled; its units went back on sale, you may buy again")]
    OrderCancelled,
    /// No sale's store knows this order (never reserved, or forgotten since).
    #[error("no such order (or it settled longer ago than store.replay_ttl)")]
    UnknownOrder,
    /// A cancel of an order still in the outbox: the backend may not have it yet.
    #[error("the order is not delivered yet; cancel it once the backend has acknowledged it")]
    OrderNotDelivered,
    /// A cancel of an order whose delivery failed: its units went back then.
    #[error("the order's delivery failed and its units went back already")]
    OrderCompensated,
    /// A sale definition the admin API was given is not valid.
    #[error("key `{key}`: {reason}")]
    InvalidSale {
        /// The key at fault (`starts_at`, `queue.capacity`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A change the sale's progress no longer allows (its window once it has opened).
    #[error("key `{key}` cannot change once the sale (or its pre-queue) has opened")]
    SaleStarted {
        /// The key.
        key: String,
    },
    /// A change to a sale an operator ended.
    #[error("the sale was ended; define a new one under another sku")]
    SaleEnded,
    /// A conditional change (`If-Match`) to another version than the store holds.
    #[error("the sale's definition is at version {current}, not the one given in If-Match")]
    VersionMismatch {
        /// The version the store holds (0: none).
        current: u64,
    },
}

/// Why admission turned a buying request away, before it reached the queue: the edge's
/// own vocabulary, with its metric label, turned into the contract's error in one place
/// (`From<Refusal> for GatewayError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Before the sale's `starts_at` (RFC 3339).
    NotStarted {
        /// When it starts.
        starts_at: String,
    },
    /// After the sale's `ends_at`.
    Closed,
    /// An operator paused the sale.
    Paused,
    /// No stock left, or none that could reach this request.
    SoldOut,
    /// The store lost the sale's state; nothing is sold until an operator loads stock.
    Held,
    /// Over the per-user or per-IP limit.
    RateLimited {
        /// Seconds until a request would pass.
        retry_after: u32,
    },
    /// The queue is full; the sale's overflow policy decides the answer.
    QueueFull,
    /// The sale's drain has stopped: the gateway is shutting down.
    ShuttingDown,
}

impl Refusal {
    /// Its `outcome` label in `flashgate_admission_total` (one of
    /// [`crate::metrics::ADMISSION_OUTCOMES`]).
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotStarted { .. } => "not_started",
            Self::Closed => "closed",
            Self::Paused => "paused",
            Self::SoldOut => "sold_out",
            Self::Held => "held",
            Self::RateLimited { .. } => "rate_limited",
            Self::QueueFull => "queue_full",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl From<Refusal> for GatewayError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotStarted { starts_at } => Self::SaleNotStarted { starts_at },
            Refusal::Closed => Self::SaleClosed,
            Refusal::Paused => Self::SalePaused,
            Refusal::SoldOut => Self::SoldOut,
            Refusal::Held => Self::SaleHeld,
            Refusal::RateLimited { retry_after } => Self::RateLimited { retry_after },
            Refusal::QueueFull => Self::QueueFull { retry_after: 1 },
            Refusal::ShuttingDown => Self::ShuttingDown,
        }
    }
}

impl From<crate::path::PathError> for GatewayError {
    fn from(e: crate::path::PathError) -> Self {
        Self::BadRequest(e.reason())
    }
}

/// The 5xx statuses of the gateway's own answers: `flashgate_server_errors_total` has a
/// series for each, on each route, from the start.
pub const GATEWAY_5XX: [StatusCode; 3] = [
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

impl GatewayError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::TooManyConnections | Self::NotReady(_) | Self::UpstreamBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::MissingIdentity | Self::BadIdentity | Self::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            Self::UnknownSale(_) | Self::UnknownTicket | Self::UnknownOrder => {
                StatusCode::NOT_FOUND
            }
            Self::SaleNotStarted { .. } | Self::SaleClosed | Self::SalePaused => {
                StatusCode::FORBIDDEN
            }
            Self::Duplicate
            | Self::PrequeuePlaceTaken { .. }
            | Self::OrderNotDelivered
            | Self::OrderCompensated
            | Self::SaleStarted { .. }
            | Self::SaleEnded => StatusCode::CONFLICT,
            Self::InvalidSale { .. } => StatusCode::BAD_REQUEST,
            Self::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            Self::SoldOut | Self::TicketLost | Self::OrderCancelled => StatusCode::GONE,
            Self::InvalidToken => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::QueueFull { .. }
            | Self::StoreUnavailable
            | Self::ShuttingDown
            | Self::TicketUnavailable
            | Self::SaleHeld => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeliveryFailed => StatusCode::BAD_GATEWAY,
        }
    }

    /// Stable machine-readable code, the `error` field of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::HeaderTooLarge { .. } => "header_too_large",
            Self::NotFound => "not_found",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamBusy => "upstream_busy",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::TooManyConnections => "too_many_connections",
            Self::NotReady(_) => "not_ready",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::MissingIdentity => "missing_identity",
            Self::BadIdentity => "bad_identity",
            Self::UnknownSale(_) => "unknown_sale",
            Self::SaleNotStarted { .. } => "sale_not_started",
            Self::SaleClosed => "sale_closed",
            Self::SalePaused => "sale_paused",
            Self::Duplicate => "duplicate",
            Self::PrequeuePlaceTaken { .. } => "prequeue_place_taken",
            Self::SoldOut => "sold_out",
            Self::InvalidToken => "invalid_token",
            Self::RateLimited { .. } => "rate_limited",
            Self::QueueFull { .. } => "queue_full",
            Self::StoreUnavailable => "store_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::UnknownTicket => "unknown_ticket",
            Self::TicketLost => "ticket_lost",
            Self::TicketUnavailable => "ticket_unavailable",
            Self::Unauthorized => "unauthorized",
            Self::RequestTimeout => "request_timeout",
            Self::SaleHeld => "sale_held",
            Self::DeliveryFailed => "delivery_failed",
            Self::OrderCancelled => "order_cancelled",
            Self::UnknownOrder => "unknown_order",
            Self::OrderNotDelivered => "order_not_delivered",
            Self::OrderCompensated => "order_compensated",
            Self::InvalidSale { .. } => "invalid_sale",
            Self::SaleStarted { .. } => "sale_started",
            Self::SaleEnded => "sale_ended",
            Self::VersionMismatch { .. } => "version_mismatch",
        }
    }

    /// Seconds a client should wait before retrying, sent as Retry-After on 429 and 503.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::TooManyConnections
            | Self::UpstreamBusy
            | Self::NotReady(_)
            | Self::StoreUnavailable
            | Self::TicketUnavailable
            | Self::ShuttingDown => Some(1),
            Self::SaleHeld => Some(30),
            Self::RateLimited { retry_after } | Self::QueueFull { retry_after } => {
                Some((*retry_after).max(1))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_counted_label_and_its_own_error() {
        let all = [
            Refusal::NotStarted {
                starts_at: "x".into(),
            },
            Refusal::Closed,
            Refusal::Paused,
            Refusal::SoldOut,
            Refusal::Held,
            Refusal::RateLimited { retry_after: 1 },
            Refusal::QueueFull,
            Refusal::ShuttingDown,
        ];
        let mut codes = std::collections::HashSet::new();
        for r in all {
            assert!(
                crate::metrics::ADMISSION_OUTCOMES.contains(&r.label()),
                "{r:?}"
            );
            assert!(codes.insert(GatewayError::from(r).code()));
        }
    }

    #[test]
    fn every_503_carries_retry_after_and_every_5xx_is_listed() {
        let all = [
            GatewayError::BadRequest("x"),
            GatewayError::BodyTooLarge { limit: 1 },
            GatewayError::HeaderTooLarge { limit: 1 },
            GatewayError::NotFound,
            GatewayError::UpstreamUnavailable,
            GatewayError::UpstreamBusy,
            GatewayError::UpstreamTimeout(Duration::from_secs(1)),
            GatewayError::TooManyConnections,
            GatewayError::NotReady("x".into()),
            GatewayError::MethodNotAllowed,
            GatewayError::MissingIdentity,
            GatewayError::BadIdentity,
            GatewayError::UnknownSale("x".into()),
            GatewayError::SaleNotStarted {
                starts_at: "x".into(),
            },
            GatewayError::SaleClosed,
            GatewayError::SalePaused,
            GatewayError::Duplicate,
            GatewayError::PrequeuePlaceTaken { ticket: "x".into() },
            GatewayError::SoldOut,
            GatewayError::InvalidToken,
            GatewayError::RateLimited { retry_after: 0 },
            GatewayError::QueueFull { retry_after: 0 },
            GatewayError::StoreUnavailable,
            GatewayError::ShuttingDown,
            GatewayError::UnknownTicket,
            GatewayError::TicketLost,
            GatewayError::TicketUnavailable,
            GatewayError::Unauthorized,
            GatewayError::RequestTimeout,
            GatewayError::SaleHeld,
            GatewayError::DeliveryFailed,
            GatewayError::OrderCancelled,
            GatewayError::UnknownOrder,
            GatewayError::OrderNotDelivered,
            GatewayError::OrderCompensated,
            GatewayError::InvalidSale {
                key: "k".into(),
                reason: "r".into(),
            },
            GatewayError::SaleStarted { key: "k".into() },
            GatewayError::SaleEnded,
            GatewayError::VersionMismatch { current: 1 },
        ];
        for e in all {
            let needs = matches!(e.status().as_u16(), 429 | 503);
            assert_eq!(e.retry_after().is_some(), needs, "{}", e.code());
            if e.status().is_server_error() {
                assert!(GATEWAY_5XX.contains(&e.status()), "{}", e.code());
            }
        }
    }
}
