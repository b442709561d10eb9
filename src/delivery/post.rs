//! One delivery attempt: the POST of an order to the backend, and what its answer means
//! under the backend contract (docs/contract.md, "Backend contract").

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::limit::Load;
use super::Settings;
use crate::http::UpstreamError;
use crate::store::Order;

/// What the backend said about one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// 2xx or 409: it has the order.
    Accepted,
    /// Any other status not in `delivery.retry_statuses` (a 4xx, 501, 505): it will never
    /// take it.
    Refused,
    /// It does not have the order now (a status in `delivery.retry_statuses`, or the
    /// request never left): try again later.
    Retry,
    /// No answer after the request went out (a timeout, a reset): it may have applied it.
    Unknown,
}

/// The body of a delivery: the order and until when the backend may still take it.
#[derive(serde::Serialize)]
struct Delivery<'a> {
    #[serde(flatten)]
    order: &'a Order,
    /// After this (ms since the Unix epoch) the backend refuses the order with 410 unless
    /// it applied it already: what makes compensating after the deadline safe.
    expires_at: u64,
}

/// What one delivery attempt got back, for the logs.
pub(super) enum Reply {
    /// The backend answered with this status.
    Status(StatusCode),
    /// The request never left (no connection, the pool full, a request not built).
    NotSent(String),
    /// The request left and no answer came (a timeout, a reset).
    NoAnswer(String),
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "HTTP {s}"),
            Self::NotSent(why) => write!(f, "not sent: {why}"),
            Self::NoAnswer(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// One attempt as the deliverer learns from it: the order's verdict, what came back, and
/// what it says about the backend's load.
pub(super) struct Attempt {
    /// What it means for the order.
    pub(super) verdict: Verdict,
    /// What came back.
    pub(super) reply: Reply,
    /// From the POST to its answer.
    pub(super) took: std::time::Duration,
    /// The backend's `Retry-After` (seconds) with a 429 or 503: no delivery before then.
    pub(super) retry_after: Option<std::time::Duration>,
}

impl Attempt {
    /// What it says about the backend's load (for the adaptive limit).
    pub(super) fn load(&self) -> Load {
        match &self.reply {
            Reply::Status(s) if matches!(s.as_u16(), 429 | 503 | 504) => Load::Overloaded,
            Reply::Status(s) if s.is_success() || *s == StatusCode::CONFLICT => Load::Answered,
            Reply::Status(_) | Reply::NotSent(_) => Load::Unmeasured,
            Reply::NoAnswer(_) => Load::Overloaded,
        }
    }

    /// Its class in `flashgate_delivery_answers_total`.
    pub(super) fn class(&self) -> &'static str {
        match &self.reply {
            Reply::Status(s) => match s.as_u16() {
                200..=299 => "2xx",
                409 => "409",
                429 => "429",
                503 => "503",
                500..=599 => "5xx",
                _ => "4xx",
            },
            Reply::NoAnswer(_) => "timeout",
            Reply::NotSent(_) => "not_sent",
        }
    }
}

/// POSTs one order to the backend.
pub(super) async fn post(settings: &Settings, order: &Order, expires_at: u64) -> Attempt {
    let started = std::time::Instant::now();
    let (verdict, reply, retry_after) = exchange(settings, order, expires_at).await;
    Attempt {
        verdict,
        reply,
        took: started.elapsed(),
        retry_after,
    }
}

/// The POST itself: its verdict, reply and `Retry-After`.
async fn exchange(
    settings: &Settings,
    order: &Order,
    expires_at: u64,
) -> (Verdict, Reply, Option<std::time::Duration>) {
    let not_sent = |why: &str| (Verdict::Retry, Reply::NotSent(why.to_owned()), None);
    let pool = &settings.pool;
    let Ok(body) = serde_json::to_vec(&Delivery { order, expires_at }) else {
        return not_sent("the order cannot be encoded");
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(settings.path.as_str())
        .header(HOST, settings.host.clone())
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", order.order_id.as_str());
    if let Some(signer) = &settings.signer {
        // Signed afresh on every attempt: a retry hours later is still within tolerance.
        let now = crate::types::unix_millis(std::time::SystemTime::now()) / 1000;
        req = req.header(
            &crate::signature::FLASHGATE_SIGNATURE,
            signer.sign(now, &body),
        );
    }
    let req = req.body(Full::new(Bytes::from(body)));
    let Ok(req) = req else {
        return not_sent("the request cannot be built");
    };
    // The whole exchange, body included, is bounded: a backend that sends a head and then
    // stalls must not hold the deliverer (nor outlive `claim_idle`, which fences it).
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let resp = match tokio::time::timeout_at(deadline, pool.send(req)).await {
        Ok(Ok(resp)) => resp,
        // Never connected: the request did not leave.
        Ok(Err(e @ (UpstreamError::Connect { .. } | UpstreamError::Busy))) => {
            return not_sent(&e.to_string());
        }
        Ok(Err(e)) => return (Verdict::Unknown, Reply::NoAnswer(e.to_string()), None),
        Err(_) => {
            let why = format!("no answer within upstream.timeout ({:?})", settings.timeout);
            return (Verdict::Unknown, Reply::NoAnswer(why), None);
        }
    };
    let status = resp.status();
    let retry_after = match status.as_u16() {
        429 | 503 => retry_after(resp.headers()),
        _ => None,
    };
    // The head decided; the body is read so the connection can be reused, within the same
    // bound (a stalled body just closes the connection).
    let _ = tokio::time::timeout_at(deadline, resp.into_body().collect()).await;
    (
        verdict(status, &settings.retry_statuses),
        Reply::Status(status),
        retry_after,
    )
}

/// A `Retry-After` of delta-seconds (an HTTP-date is not honoured: the order's own
/// backoff applies).
fn retry_after(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    let seconds: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::Duration::from_secs(seconds))
}

/// 5xx answers that say the request was not processed: 501 Not Implemented, 503 Service
/// Unavailable, 505 HTTP Version Not Supported. Any other 5xx (500, 502, 504, a CDN's
/// 520-527, …) may come from a proxy after the request reached the backend.
const NOT_PROCESSED_5XX: [u16; 3] = [501, 503, 505];

/// The backend contract: 2xx and 409 delivered; a 5xx that does not say the request went
/// unprocessed leaves the order's fate unknown (asked again, never compensated on it);
/// `retry` statuses not now; any other status never (a 4xx, 501, 505: retrying cannot
/// change the answer).
fn verdict(status: StatusCode, retry: &[u16]) -> Verdict {
    if status.is_success() || status == StatusCode::CONFLICT {
        Verdict::Accepted
    } else if status.is_server_error() && !NOT_PROCESSED_5XX.contains(&status.as_u16()) {
        Verdict::Unknown
    } else if retry.contains(&status.as_u16()) {
        Verdict::Retry
    } else {
        Verdict::Refused
    }
}

/// What an attempt's verdict means for an order that may already be applied (an earlier
/// attempt went unanswered): only the backend's own refusal, a 4xx (410 for a late order,
/// per the contract), proves it was not; a 501 or 505 from something in between proves
/// nothing, and the order is asked again.
pub(super) fn standing(verdict: Verdict, reply: &Reply, ambiguous: bool) -> Verdict {
    match (verdict, reply) {
        (Verdict::Refused, Reply::Status(s)) if ambiguous && !s.is_client_error() => Verdict::Retry,
        (v, _) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_order_taken_measures_the_backends_latency() {
        // Adversarial review: a 422 in a millisecond passed for the no-load latency.
        let load = |s: u16| {
            Attempt {
                verdict: Verdict::Refused,
                reply: Reply::Status(StatusCode::from_u16(s).expect("status")),
                took: std::time::Duration::from_millis(1),
                retry_after: None,
            }
            .load()
        };
        assert_eq!(load(201), Load::Answered);
        assert_eq!(load(409), Load::Answered);
        for unmeasured in [400, 410, 422, 500, 501] {
            assert_eq!(load(unmeasured), Load::Unmeasured, "{unmeasured}");
        }
        for overloaded in [429, 503, 504] {
            assert_eq!(load(overloaded), Load::Overloaded, "{overloaded}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::RETRY_AFTER, v.parse().expect("value"));
            retry_after(&h)
        };
        assert_eq!(with("3"), Some(std::time::Duration::from_secs(3)));
        assert_eq!(with(" 0 "), Some(std::time::Duration::ZERO));
        assert_eq!(with("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(with("-1"), None);
        assert_eq!(retry_after(&http::HeaderMap::new()), None);
    }

    #[test]
    fn backend_contract_verdicts() {
        let retry = crate::config::DeliveryConfig::default().retry_statuses;
        let v = |s: u16| verdict(StatusCode::from_u16(s).expect("status"), &retry);
        assert_eq!(v(201), Verdict::Accepted);
        assert_eq!(v(409), Verdict::Accepted);
        assert_eq!(v(400), Verdict::Refused);
        assert_eq!(v(422), Verdict::Refused);
        for permanent in [501, 505, 301] {
            assert_eq!(v(permanent), Verdict::Refused, "{permanent}");
        }
        for not_now in [408, 425, 429, 503] {
            assert_eq!(v(not_now), Verdict::Retry, "{not_now}");
        }
        // Review finding: a CDN's 524 (the origin timed out, maybe after applying the
        // order) was taken as a refusal and the unit sold again. A 5xx that does not say
        // "not processed" leaves the order's fate unknown, listed or not.
        for unknown in [500, 502, 504, 520, 524, 599] {
            assert_eq!(v(unknown), Verdict::Unknown, "{unknown}");
        }
        // Configurable: a backend whose 501 means "not deployed yet" can have it retried.
        let mut with_501 = retry.clone();
        with_501.push(501);
        assert_eq!(
            verdict(StatusCode::NOT_IMPLEMENTED, &with_501),
            Verdict::Retry
        );
    }

    #[test]
    fn an_order_that_may_be_applied_is_refused_only_by_the_backends_4xx() {
        let status = |s: u16| Reply::Status(StatusCode::from_u16(s).expect("status"));
        // Review finding: a timeout, then a 501 from something in between, compensated an
        // order the first attempt had applied.
        assert_eq!(
            standing(Verdict::Refused, &status(501), true),
            Verdict::Retry
        );
        assert_eq!(
            standing(Verdict::Refused, &status(301), true),
            Verdict::Retry
        );
        assert_eq!(
            standing(Verdict::Refused, &status(410), true),
            Verdict::Refused
        );
        assert_eq!(
            standing(Verdict::Refused, &status(501), false),
            Verdict::Refused
        );
        assert_eq!(
            standing(Verdict::Accepted, &status(200), true),
            Verdict::Accepted
        );
    }
}
