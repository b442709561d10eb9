//! Reading a whole request body the gateway answers itself (an order, an admin command):
//! bounded in size and in time, each failure with its own code.

use std::time::Duration;

use crate::http::RequestBody;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

use super::deadline::Deadline;
use crate::error::GatewayError;

/// Request body as sent upstream: the client's body, cut off at `server.body_limit` and
/// after `server.body_timeout`.
pub type UpstreamBody = Limited<Deadline<RequestBody>>;

/// Reads `body` whole: 413 `body_too_large` past `limit` bytes (declared or sent), 408
/// `request_timeout` when it has not arrived within `timeout`, 400 `bad_request` when the
/// client broke it off.
pub async fn read(
    headers: &HeaderMap,
    body: RequestBody,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let too_large = GatewayError::BodyTooLarge {
        limit: limit as u64,
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large);
    }
    if http_body::Body::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| GatewayError::RequestTimeout)?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Err(_) => Err(GatewayError::BadRequest("the body could not be read")),
    }
}
