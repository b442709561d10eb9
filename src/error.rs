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
    /// No route on the admin listener matches.
    #[error("no such route")]
    NotFound,
    /// The upstream refused the connection, reset it, or sent a malformed answer.
    #[error("the upstream is unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer with a response head in time.
    #[error("the upstream did not answer within {}", humantime::format_duration(*.0))]
    UpstreamTimeout(Duration),
    /// The listener already holds `server.max_connections` connections.
    #[error("connection limit reached, retry shortly")]
    TooManyConnections,
    /// The gateway is not ready to serve (admin `/readyz`).
    #[error("not ready: {0}")]
    NotReady(String),
}

impl GatewayError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::TooManyConnections | Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Stable machine-readable code, the `error` field of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::NotFound => "not_found",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::TooManyConnections => "too_many_connections",
            Self::NotReady(_) => "not_ready",
        }
    }

    /// Seconds a client should wait before retrying, sent as Retry-After on 429 and 503.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::TooManyConnections | Self::NotReady(_) => Some(1),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_carries_retry_after() {
        let all = [
            GatewayError::BadRequest("x"),
            GatewayError::BodyTooLarge { limit: 1 },
            GatewayError::NotFound,
            GatewayError::UpstreamUnavailable,
            GatewayError::UpstreamTimeout(Duration::from_secs(1)),
            GatewayError::TooManyConnections,
            GatewayError::NotReady("x".into()),
        ];
        for e in all {
            let needs = matches!(e.status().as_u16(), 429 | 503);
            assert_eq!(e.retry_after().is_some(), needs, "{}", e.code());
        }
    }
}
