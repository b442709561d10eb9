//! The deliverer: hands reserved orders from the outbox to the backend with an
//! idempotency key. 2xx or 409 is an acknowledgement (confirm); other 4xx is a permanent
//! refusal (compensate: stock and the user's count go back); 5xx and transport errors are
//! retried on the next round.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::proxy::Pool;
use crate::sale::Sale;
use crate::store::{Compensation, Order};
use crate::ticket::TicketStatus;

/// What the deliverer needs from the config.
pub struct Settings {
    pool: Option<Pool<Full<Bytes>>>,
    host: HeaderValue,
    path: String,
    max_in_flight: usize,
    retry_interval: Duration,
    timeout: Duration,
    shutdown_timeout: Duration,
}

impl Settings {
    /// From `[delivery]` and `[upstream]`.
    pub fn new(config: &Config) -> Self {
        let uri: Option<Uri> = config.upstream.url.parse().ok();
        let authority = uri.as_ref().and_then(|u| u.authority().cloned());
        let prefix = uri
            .as_ref()
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let host = authority
            .as_ref()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or(HeaderValue::from_static("localhost"));
        let pool = authority.map(|a| {
            Pool::new(
                a,
                config.delivery.max_in_flight,
                config.upstream.pool_idle_timeout,
                config.upstream.connect_timeout,
            )
        });
        Self {
            pool,
            host,
            path: format!("{prefix}{}", config.delivery.path),
            max_in_flight: config.delivery.max_in_flight,
            retry_interval: config.delivery.retry_interval,
            timeout: config.upstream.timeout,
            shutdown_timeout: config.server.shutdown_timeout,
        }
    }
}

/// What the backend said about one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Refused,
    Retry,
}

/// Delivers until `shutdown`, then keeps delivering what is left for up to
/// `server.shutdown_timeout`, since the memory store's outbox does not outlive the process.
pub async fn run(engine: Arc<Engine>, settings: Settings, shutdown: CancellationToken) {
    let settings = Arc::new(settings);
    loop {
        let (settled, waiting) = round(&engine, &settings).await;
        if shutdown.is_cancelled() {
            break;
        }
        if settled > 0 {
            // A batch went through; more may be waiting behind it.
            continue;
        }
        // Nothing settled: the outbox is empty, or the backend takes nothing right now.
        let pause = if waiting == 0 {
            Duration::from_secs(3600)
        } else {
            settings.retry_interval
        };
        tokio::select! {
            () = engine.outbox_ready.notified() => {}
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => {}
        }
    }
    let flush = async {
        loop {
            match round(&engine, &settings).await {
                (0, 0) => return,
                (0, _) => tokio::time::sleep(settings.retry_interval).await,
                _ => {}
            }
        }
    };
    if tokio::time::timeout(settings.shutdown_timeout, flush)
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed with orders still in the outbox");
    }
}

/// One pass over every sale's outbox, a batch of at most `max_in_flight` orders each;
/// returns (orders settled, orders that must be retried).
async fn round(engine: &Arc<Engine>, settings: &Arc<Settings>) -> (usize, usize) {
    let mut settled = 0;
    let mut waiting = 0;
    for sale in engine.sales.iter() {
        let batch = match engine.store.outbox(&sale.sku, settings.max_in_flight).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(sku = %sale.sku, error = %e, "cannot read the outbox");
                waiting += 1;
                continue;
            }
        };
        let mut set = JoinSet::new();
        for order in batch {
            let settings = settings.clone();
            set.spawn(async move {
                let verdict = post(&settings, &order).await;
                (order, verdict)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((order, verdict)) = joined else {
                waiting += 1;
                continue;
            };
            match settle(engine, sale, &order, verdict).await {
                true => settled += 1,
                false => waiting += 1,
            }
        }
    }
    (settled, waiting)
}

/// Applies the backend's verdict to the store and the ticket; `true` if the order left the outbox.
async fn settle(engine: &Engine, sale: &Sale, order: &Order, verdict: Verdict) -> bool {
    match verdict {
        Verdict::Retry => false,
        Verdict::Accepted => match engine.store.confirm(&sale.sku, &order.order_id).await {
            Ok(_) => {
                engine
                    .tickets
                    .update_by_order(&order.order_id, TicketStatus::Confirmed(order.order_id));
                true
            }
            Err(e) => {
                tracing::warn!(order = %order.order_id, error = %e, "cannot confirm a delivered order");
                false
            }
        },
        Verdict::Refused => match engine.store.compensate(&sale.sku, &order.order_id).await {
            Ok(result) => {
                if let Compensation::Restored { remaining } = result {
                    sale.set_remaining(remaining);
                }
                tracing::warn!(order = %order.order_id, "backend refused the order; stock restored");
                engine
                    .tickets
                    .update_by_order(&order.order_id, TicketStatus::Failed(order.order_id));
                true
            }
            Err(e) => {
                tracing::warn!(order = %order.order_id, error = %e, "cannot compensate a refused order");
                false
            }
        },
    }
}

/// POSTs one order to the backend.
async fn post(settings: &Settings, order: &Order) -> Verdict {
    let Some(pool) = &settings.pool else {
        return Verdict::Retry;
    };
    let Ok(body) = serde_json::to_vec(order) else {
        return Verdict::Retry;
    };
    let req = Request::builder()
        .method(Method::POST)
        .uri(settings.path.as_str())
        .header(HOST, settings.host.clone())
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", order.order_id.as_str())
        .body(Full::new(Bytes::from(body)));
    let Ok(req) = req else {
        return Verdict::Retry;
    };
    let resp = match tokio::time::timeout(settings.timeout, pool.send(req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::debug!(order = %order.order_id, error = %e, "delivery failed; will retry");
            return Verdict::Retry;
        }
        Err(_) => return Verdict::Retry,
    };
    let status = resp.status();
    // Read the answer to the end so the connection goes back to the pool.
    let _ = resp.into_body().collect().await;
    verdict(status)
}

fn verdict(status: StatusCode) -> Verdict {
    if status.is_success() || status == StatusCode::CONFLICT {
        Verdict::Accepted
    } else if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
        // Client errors that say "not now" rather than "never".
        Verdict::Retry
    } else if status.is_client_error() {
        Verdict::Refused
    } else {
        Verdict::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_contract_verdicts() {
        assert_eq!(verdict(StatusCode::CREATED), Verdict::Accepted);
        assert_eq!(verdict(StatusCode::CONFLICT), Verdict::Accepted);
        assert_eq!(verdict(StatusCode::BAD_REQUEST), Verdict::Refused);
        assert_eq!(verdict(StatusCode::UNPROCESSABLE_ENTITY), Verdict::Refused);
        assert_eq!(verdict(StatusCode::INTERNAL_SERVER_ERROR), Verdict::Retry);
        assert_eq!(verdict(StatusCode::SERVICE_UNAVAILABLE), Verdict::Retry);
        assert_eq!(verdict(StatusCode::MOVED_PERMANENTLY), Verdict::Retry);
        assert_eq!(verdict(StatusCode::TOO_MANY_REQUESTS), Verdict::Retry);
    }
}
