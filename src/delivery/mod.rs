//! The deliverer: hands reserved orders from the outbox to the backend with an
//! idempotency key. 2xx or 409 is an acknowledgement (confirm); other 4xx is a permanent
//! refusal (compensate: stock and the user's count go back); 5xx, 408, 429 and transport
//! errors are retried with exponential backoff and jitter until `delivery.deadline` (or
//! `delivery.retries`) runs out, which compensates too. A breaker holds deliveries back
//! while the backend keeps failing, so retries are not burnt against a dead backend.

mod retry;

pub use retry::{BackendBreaker, Backoff};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::proxy::{Pool, UpstreamTarget};
use crate::sale::Sale;
use crate::store::{unix_millis, Compensation, Order};
use crate::ticket::TicketStatus;

/// What the deliverer needs from the config.
pub struct Settings {
    pool: Option<Pool<Full<Bytes>>>,
    host: HeaderValue,
    path: String,
    max_in_flight: usize,
    retries: u32,
    deadline: Duration,
    retry_base: Duration,
    retry_max: Duration,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    timeout: Duration,
    shutdown_timeout: Duration,
    /// This deliverer's name in the store's consumer group: unique per process.
    consumer: String,
    claim_idle: Duration,
}

impl Settings {
    /// From `[delivery]` and `[upstream]`.
    pub fn new(config: &Config) -> Self {
        let target = UpstreamTarget::parse(&config.upstream.url).ok();
        let host = target
            .as_ref()
            .map_or(HeaderValue::from_static("localhost"), |t| t.host.clone());
        let prefix = target
            .as_ref()
            .map(|t| t.prefix.clone())
            .unwrap_or_default();
        let pool = target.map(|t| {
            Pool::new(
                t.authority,
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
            retries: config.delivery.retries,
            deadline: config.delivery.deadline,
            retry_base: config.delivery.retry_base,
            retry_max: config.delivery.retry_max,
            breaker_threshold: config.delivery.breaker_threshold,
            breaker_cooldown: config.delivery.breaker_cooldown,
            consumer: format!(
                "{}-{}",
                std::process::id(),
                &crate::types::OrderId::random().as_str()[..8]
            ),
            claim_idle: config.delivery.claim_idle,
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

/// The deliverer's memory between rounds.
struct State {
    backoff: Backoff,
    breaker: BackendBreaker,
}

/// What one round did.
#[derive(Default)]
struct Round {
    /// Orders that left the outbox (confirmed or compensated).
    settled: usize,
    /// Orders still waiting (backing off, held by the breaker, or failed again).
    waiting: usize,
}

/// Delivers until `shutdown`, then keeps delivering what is left for up to
/// `server.shutdown_timeout`: the memory store's outbox does not outlive the process.
pub async fn run(engine: Arc<Engine>, settings: Settings, shutdown: CancellationToken) {
    let settings = Arc::new(settings);
    let mut state = State {
        backoff: Backoff::new(settings.retry_base, settings.retry_max),
        breaker: BackendBreaker::new(settings.breaker_threshold, settings.breaker_cooldown),
    };
    loop {
        let r = round(&engine, &settings, &mut state).await;
        if shutdown.is_cancelled() {
            break;
        }
        if r.settled > 0 {
            // A batch went through; more may be waiting behind it.
            continue;
        }
        tokio::select! {
            () = engine.outbox_ready.notified() => {}
            () = sleep_until_due(&state, r.waiting, settings.claim_idle) => {}
            () = shutdown.cancelled() => {}
        }
    }
    let flush = async {
        loop {
            let r = round(&engine, &settings, &mut state).await;
            if r.settled == 0 && r.waiting == 0 {
                return;
            }
            if r.settled == 0 {
                sleep_until_due(&state, r.waiting, settings.claim_idle).await;
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

/// Sleeps until the next order is due or the breaker lets a probe through; with nothing
/// waiting, until woken or `claim_idle` has passed (another instance's orders may be
/// ours to take over by then).
async fn sleep_until_due(state: &State, waiting: usize, claim_idle: Duration) {
    let now = Instant::now();
    let next = [state.backoff.next_due(), state.breaker.open_until()]
        .into_iter()
        .flatten()
        .min();
    let wait = match next {
        Some(at) => at.saturating_duration_since(now),
        // Something waits with no schedule (the outbox could not be read): retry soon.
        None if waiting > 0 => Duration::from_millis(200),
        None => claim_idle,
    };
    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
}

/// One pass over every sale's outbox.
async fn round(engine: &Arc<Engine>, settings: &Arc<Settings>, state: &mut State) -> Round {
    let mut r = Round::default();
    let mut seen = std::collections::HashSet::new();
    for sale in engine.sales.iter() {
        // Read past the orders that are backing off so newer ones are not starved.
        let window = settings.max_in_flight.saturating_mul(8);
        let claimed = engine
            .store
            .claim(&sale.sku, &settings.consumer, window, settings.claim_idle)
            .await;
        let outbox = match claimed {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(sku = %sale.sku, error = %e, "cannot read the outbox");
                r.waiting += 1;
                continue;
            }
        };
        let now = Instant::now();
        let now_ms = unix_millis(SystemTime::now());
        let mut batch = Vec::new();
        seen.extend(outbox.iter().map(|o| o.order_id));
        for order in outbox {
            let expired =
                now_ms.saturating_sub(order.reserved_at) > settings.deadline.as_millis() as u64;
            let exhausted =
                settings.retries > 0 && state.backoff.attempts(&order.order_id) >= settings.retries;
            if expired || exhausted {
                tracing::warn!(order = %order.order_id, attempts = state.backoff.attempts(&order.order_id),
                    "delivery gave up (deadline or retries); compensating");
                if settle(engine, sale, &order, Verdict::Refused).await {
                    state.backoff.done(&order.order_id);
                    r.settled += 1;
                } else {
                    r.waiting += 1;
                }
            } else if state.backoff.due(&order.order_id, now) {
                batch.push(order);
            } else {
                r.waiting += 1;
            }
        }
        // Fewest attempts first: while the breaker lets only a probe through, every order
        // gets its turn instead of the oldest one being tried again and again.
        batch.sort_by_key(|o| state.backoff.attempts(&o.order_id));
        let allowed = state.breaker.allowance(now, settings.max_in_flight);
        r.waiting += batch.len().saturating_sub(allowed);
        batch.truncate(allowed);
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
                r.waiting += 1;
                continue;
            };
            let result = match verdict {
                Verdict::Accepted => "confirmed",
                Verdict::Refused => "refused",
                Verdict::Retry => "retry",
            };
            engine.metrics.deliveries.with_label_values(&[result]).inc();
            match verdict {
                Verdict::Retry => {
                    state.breaker.failure(Instant::now());
                    state.backoff.failed(order.order_id, Instant::now());
                    r.waiting += 1;
                }
                _ => {
                    state.breaker.success();
                    if settle(engine, sale, &order, verdict).await {
                        state.backoff.done(&order.order_id);
                        r.settled += 1;
                    } else {
                        r.waiting += 1;
                    }
                }
            }
        }
    }
    // Orders that left the outbox elsewhere (another instance delivered them) are forgotten.
    state.backoff.retain(|o| seen.contains(o));
    let m = &engine.metrics;
    m.outbox_backlog.set(r.waiting as i64);
    let open = state.breaker.open_until().is_some();
    m.breaker_open
        .with_label_values(&["backend"])
        .set(i64::from(open));
    r
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
                    if let Some(c) = engine.counters(&sale.sku) {
                        c.compensations.inc();
                    }
                }
                tracing::warn!(order = %order.order_id, "order not delivered; stock restored");
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
