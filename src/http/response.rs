//! Response bodies and the JSON answers the gateway writes itself.

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use serde::Serialize;

use crate::error::GatewayError;
use crate::http::{PooledBody, UpstreamBody};

/// Body of every response: streamed from the upstream, or written whole by the gateway.
pub type ResponseBody = Either<PooledBody<UpstreamBody>, Full<Bytes>>;

/// A response the gateway answers itself.
pub type GatewayResponse = Response<ResponseBody>;

/// A JSON answer with the given status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> GatewayResponse {
    // Serialising our own plain structs cannot fail; the fallback keeps the type honest.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    json_bytes(status, Bytes::from(body))
}

/// A JSON body already serialised, with the headers every JSON answer carries.
fn json_bytes(status: StatusCode, body: Bytes) -> GatewayResponse {
    let mut resp = Response::new(Either::Right(Full::new(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    starts_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<&'a str>,
    /// The key at fault, for an invalid or refused sale definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    /// The version the store holds, for a stale `If-Match`.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

impl GatewayError {
    /// The JSON body of the refusal: `{"error": code, "message": text}`.
    pub fn body(&self) -> Vec<u8> {
        let starts_at = match self {
            GatewayError::SaleNotStarted { starts_at } => Some(starts_at.as_str()),
            _ => None,
        };
        let ticket = match self {
            GatewayError::PrequeuePlaceTaken { ticket } => Some(ticket.as_str()),
            _ => None,
        };
        let key = match self {
            GatewayError::InvalidSale { key, .. } | GatewayError::SaleStarted { key } => {
                Some(key.as_str())
            }
            _ => None,
        };
        let version = match self {
            GatewayError::VersionMismatch { current } => Some(*current),
            _ => None,
        };
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            starts_at,
            ticket,
            key,
            version,
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The body of a refusal whose body never varies (no field in it, a fixed message),
    /// serialised once: a crowd refused `sold_out` is answered without building it anew.
    fn fixed_body(&self) -> Option<&'static [u8]> {
        const FIXED: usize = 12;
        static BODIES: [OnceLock<&'static [u8]>; FIXED] = [const { OnceLock::new() }; FIXED];
        let slot = match self {
            GatewayError::SoldOut => 0,
            GatewayError::RateLimited { .. } => 1,
            GatewayError::QueueFull { .. } => 2,
            GatewayError::SaleClosed => 3,
            GatewayError::SalePaused => 4,
            GatewayError::SaleHeld => 5,
            GatewayError::InvalidToken => 6,
            GatewayError::Duplicate => 7,
            GatewayError::StoreUnavailable => 8,
            GatewayError::ShuttingDown => 9,
            GatewayError::NotFound => 10,
            GatewayError::MethodNotAllowed => 11,
            _ => return None,
        };
        // Once per kind for the process's life: a few dozen bytes each, never freed.
        Some(BODIES[slot].get_or_init(|| Box::leak(self.body().into_boxed_slice())))
    }

    /// The contract's JSON refusal, with Retry-After where due.
    pub fn into_response(self) -> GatewayResponse {
        let body = match self.fixed_body() {
            Some(fixed) => Bytes::from_static(fixed),
            None => Bytes::from(self.body()),
        };
        let mut resp = json_bytes(self.status(), body);
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }

    /// The refusal for a request whose body is not read: the connection ends with the
    /// answer, since with ambiguous framing the unread body cannot be skipped safely.
    pub fn into_closing_response(self) -> GatewayResponse {
        let mut resp = self.into_response();
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The body a refusal is answered with.
    fn answered(e: GatewayError) -> Vec<u8> {
        let collect = e.into_response().into_body().collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a test runtime");
        match runtime.block_on(collect) {
            Ok(body) => body.to_bytes().to_vec(),
            Err(e) => panic!("a full body cannot fail: {e}"),
        }
    }

    #[test]
    fn a_refusal_served_from_its_kept_body_says_what_a_fresh_one_would() {
        let kinds: [fn() -> GatewayError; 12] = [
            || GatewayError::SoldOut,
            || GatewayError::RateLimited { retry_after: 3 },
            || GatewayError::QueueFull { retry_after: 1 },
            || GatewayError::SaleClosed,
            || GatewayError::SalePaused,
            || GatewayError::SaleHeld,
            || GatewayError::InvalidToken,
            || GatewayError::Duplicate,
            || GatewayError::StoreUnavailable,
            || GatewayError::ShuttingDown,
            || GatewayError::NotFound,
            || GatewayError::MethodNotAllowed,
        ];
        for kind in kinds {
            let want = kind().body();
            assert!(
                kind().fixed_body().is_some(),
                "{:?} has a kept body",
                kind()
            );
            // Twice: the second answer comes from what the first kept.
            for _ in 0..2 {
                assert_eq!(answered(kind()), want, "{:?}", kind());
            }
        }
        // A refusal that carries a field is never served from a kept body.
        let not_started = || GatewayError::SaleNotStarted {
            starts_at: "2026-12-08T00:00:00Z".into(),
        };
        assert!(not_started().fixed_body().is_none());
        assert_eq!(answered(not_started()), not_started().body());
    }
}
