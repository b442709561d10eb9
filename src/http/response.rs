//! Response bodies and the JSON answers the gateway writes itself.

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
    json_bytes(status, body)
}

/// A JSON body already serialised, with the headers every JSON answer carries.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> GatewayResponse {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
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

    /// The contract's JSON refusal, with Retry-After where due.
    pub fn into_response(self) -> GatewayResponse {
        let mut resp = json_bytes(self.status(), self.body());
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
