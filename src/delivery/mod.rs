//! The deliverer: hands reserved orders from the outbox to the backend with an
//! idempotency key. 2xx or 409 is an acknowledgement (confirm). A 5xx other than 501, 503
//! and 505 may come from a proxy after the request reached the backend: the order's fate
//! is unknown and it is asked again until the backend says. A status in
//! `delivery.retry_statuses` (408, 425, 429, 503 by default) and connection errors are
//! retried with exponential backoff and jitter until `delivery.deadline` (or
//! `delivery.retries`) runs out, which compensates too; any other status (a 4xx, 501, 505)
//! is a permanent refusal (compensate: stock and the user's count go back), unless an
//! earlier attempt may have landed: then only a 4xx refuses it. A breaker holds deliveries back
//! while the backend keeps failing, so retries are not burnt against a dead backend.
//!
//! An order the backend may have accepted is never compensated. An acknowledgement is kept
//! until the store confirms it. An attempt whose outcome is unknown (a timeout, a reset
//! after the request went out) makes the order *ambiguous*: the backend may apply it
//! later. Every delivery carries `expires_at` (reserved_at + deadline, on the store's
//! clock), and the backend contract says a new order arriving after it is refused with 410.
//! At the deadline the order is asked about once more with the same Idempotency-Key: 2xx
//! or 409 confirms it; a refusal (410 or another 4xx) compensates it; a 5xx or no answer
//! compensates it only if no earlier attempt was ambiguous — else it is asked again later,
//! until the backend says which. Orders taken over from another deliverer count as
//! ambiguous (their history is unknown). With many instances, settlement is fenced: only
//! the deliverer that owns an order's pending entry may confirm or compensate it, and it
//! renews that hold right before each POST.

mod limit;
mod post;
mod retry;
mod round;
mod takeover;

pub use retry::Backoff;

use crate::breaker::CircuitBreaker;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::Full;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::membership::Membership;
use crate::config::{DeliveryConfig, InFlight, UpstreamConfig};
use crate::http::{Pool, UpstreamTarget};
use crate::sale::context::SaleContext;
use crate::types::OrderId;

/// What the deliverer needs from the config.
pub struct Settings {
    pool: Pool<Full<Bytes>>,
    host: HeaderValue,
    path: String,
    /// `delivery.max_in_flight`, with the adaptive limit's bounds.
    in_flight: InFlight,
    min_in_flight: usize,
    in_flight_cap: usize,
    retries: u32,
    /// Statuses that mean "not now" (`delivery.retry_statuses`).
    retry_statuses: Vec<u16>,
    deadline: Duration,
    retry_base: Duration,
    retry_max: Duration,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    timeout: Duration,
    shutdown_timeout: Duration,
    /// This deliverer's name in the store's consumer group: its instance's
    /// (see [`crate::store::Member::consumer`]).
    consumer: String,
    claim_idle: Duration,
    /// How long the deliverer sleeps with nothing to do.
    idle_wake: Duration,
    /// Signs each delivery when `delivery.signing_secret` is set.
    signer: Option<crate::signature::Signer>,
}

impl Settings {
    /// From `[delivery]`, `[upstream]` and where `upstream.url` points (parsed once, by
    /// the gateway); `shutdown_timeout` bounds the deliveries after a stop.
    pub fn new(
        delivery: &DeliveryConfig,
        upstream: &UpstreamConfig,
        target: &UpstreamTarget,
        shutdown_timeout: Duration,
    ) -> Self {
        let most = delivery.max_in_flight.or(delivery.max_in_flight_cap);
        let pool = Pool::new(
            target.authority.clone(),
            most,
            // A connection still sending when its answer came holds its place a moment.
            most.saturating_mul(2),
            upstream.pool_idle_timeout,
            upstream.connect_timeout,
        );
        Self {
            pool,
            host: target.host.clone(),
            path: format!("{}{}", target.prefix, delivery.path),
            in_flight: delivery.max_in_flight,
            min_in_flight: delivery.min_in_flight,
            in_flight_cap: delivery.max_in_flight_cap,
            retries: delivery.retries,
            retry_statuses: delivery.retry_statuses.clone(),
            deadline: delivery.deadline,
            retry_base: delivery.retry_base,
            retry_max: delivery.retry_max,
            breaker_threshold: delivery.breaker_threshold,
            breaker_cooldown: delivery.breaker_cooldown,
            consumer: String::new(),
            claim_idle: delivery.claim_idle,
            idle_wake: delivery.claim_idle,
            signer: crate::signature::Signer::new(&delivery.signing_secret),
            timeout: upstream.timeout,
            shutdown_timeout,
        }
    }
}

/// How long the deliverer sleeps: until the next order is due and nothing holds deliveries
/// back (the breaker's cool-down, a backend's Retry-After);
/// with nothing waiting, until woken or `claim_idle` has passed (another instance's orders
/// may be ours to take over by then).
fn wake_after(
    now: Instant,
    next_due: Option<Instant>,
    held_until: Option<Instant>,
    waiting: usize,
    claim_idle: Duration,
) -> Duration {
    // An order may go once it is due and the breaker lets it: the later of the two.
    let due = match (next_due, held_until) {
        (Some(due), Some(ready)) => Some(due.max(ready)),
        (Some(due), None) => Some(due),
        // Orders with no schedule yet (fresh ones) held by the breaker.
        (None, Some(ready)) if waiting > 0 => Some(ready),
        (None, _) => None,
    };
    match due {
        Some(at) => at.saturating_duration_since(now),
        // Something waits with no schedule (the outbox could not be read): retry soon.
        None if waiting > 0 => Duration::from_millis(200),
        None => claim_idle,
    }
}

/// The deliverer's memory between rounds.
struct State {
    backoff: Backoff,
    breaker: Arc<CircuitBreaker>,
    /// Orders the backend acknowledged that the store has not confirmed yet (it did not
    /// answer): they are confirmed, never posted again nor compensated.
    acked: HashSet<OrderId>,
    /// Orders with an attempt of unknown outcome, or taken over from another deliverer:
    /// only a refusal from the backend compensates them.
    ambiguous: HashSet<OrderId>,
    /// Orders taken over from gone instances (see [`takeover`]), not yet marked ambiguous.
    taken: mpsc::UnboundedReceiver<OrderId>,
    /// Held while the outbox is read, and while orders are taken over.
    claiming: Arc<tokio::sync::Mutex<()>>,
    /// How many deliveries may be in flight.
    limiter: limit::Limiter,
    /// A backend's `Retry-After` holds every delivery until then.
    resume_at: Option<Instant>,
}

impl State {
    /// When deliveries may go again: the breaker's cool-down or a backend's Retry-After,
    /// whichever ends later (None: now).
    fn held_until(&self, now: Instant) -> Option<Instant> {
        let resume = self.resume_at.filter(|at| *at > now);
        match (self.breaker.ready_at(), resume) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Delivers until `shutdown`, then keeps delivering what is left for up to
/// `server.shutdown_timeout` (the round in flight included): the memory store keeps what is
/// still undelivered after that for the next start.
pub async fn run(
    ctx: Arc<SaleContext>,
    mut settings: Settings,
    membership: Arc<Membership>,
    shutdown: CancellationToken,
) {
    settings.consumer = membership.me().consumer();
    // With nothing to deliver, wake at least every heartbeat: an instance that stopped
    // announcing itself meanwhile leaves orders to take over.
    settings.idle_wake = settings.claim_idle.min(membership.heartbeat());
    let settings = Arc::new(settings);
    let (taken_tx, taken) = mpsc::unbounded_channel();
    let claiming = Arc::new(tokio::sync::Mutex::new(()));
    let mut state = State {
        backoff: Backoff::new(settings.retry_base, settings.retry_max),
        breaker: Arc::new(CircuitBreaker::new(
            "backend",
            settings.breaker_threshold,
            settings.breaker_cooldown,
        )),
        acked: HashSet::new(),
        ambiguous: HashSet::new(),
        taken,
        claiming: claiming.clone(),
        limiter: match settings.in_flight {
            crate::config::AutoOr::Fixed(n) => limit::Limiter::fixed(n),
            crate::config::AutoOr::Auto => limit::Limiter::adaptive(
                settings.min_in_flight,
                settings.in_flight_cap,
                Instant::now(),
            ),
        },
        resume_at: None,
    };
    ctx.metrics.delivery_limit.set(state.limiter.limit() as i64);
    let takeover = tokio::spawn(takeover::run(
        ctx.clone(),
        membership,
        settings.consumer.clone(),
        claiming,
        taken_tx,
        shutdown.clone(),
    ));
    // Whatever a round is doing when the stop comes, it ends by this deadline.
    let out_of_time = async {
        shutdown.cancelled().await;
        tokio::time::sleep(settings.shutdown_timeout).await;
    };
    tokio::pin!(out_of_time);
    let delivering = async {
        loop {
            let r = round::round(&ctx, &settings, &mut state).await;
            if shutdown.is_cancelled() {
                break;
            }
            if r.settled > 0 {
                // A batch went through; more may be waiting behind it.
                continue;
            }
            tokio::select! {
                () = ctx.outbox_ready.notified() => {}
                () = sleep_until_due(&state, r.waiting, settings.idle_wake) => {}
                () = shutdown.cancelled() => {}
            }
        }
        loop {
            let r = round::round(&ctx, &settings, &mut state).await;
            if r.settled == 0 && r.waiting == 0 {
                return;
            }
            if r.settled == 0 {
                sleep_until_due(&state, r.waiting, settings.idle_wake).await;
            }
        }
    };
    tokio::select! {
        () = delivering => {}
        () = &mut out_of_time => {
            tracing::warn!("shutdown deadline passed with orders still in the outbox");
        }
    }
    takeover.abort();
}

/// Sleeps until the next order may go (see [`wake_after`]), or until woken.
async fn sleep_until_due(state: &State, waiting: usize, claim_idle: Duration) {
    let now = Instant::now();
    let wait = wake_after(
        now,
        state.backoff.next_due(),
        state.held_until(now),
        waiting,
        claim_idle,
    );
    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn an_order_backing_off_is_waited_for_even_when_the_breaker_could_probe() {
        let now = Instant::now();
        let due = now + Duration::from_secs(600);
        // Adversarial review: a probe handed back made the breaker "ready" in the past,
        // and the deliverer woke every millisecond to read the outbox for nothing.
        let wait = wake_after(now, Some(due), Some(now - Duration::from_secs(1)), 1, IDLE);
        assert_eq!(wait, Duration::from_secs(600));
    }

    #[test]
    fn an_order_due_now_waits_for_the_breaker_to_cool_down() {
        let now = Instant::now();
        let ready = now + Duration::from_secs(2);
        let wait = wake_after(
            now,
            Some(now - Duration::from_secs(1)),
            Some(ready),
            1,
            IDLE,
        );
        assert_eq!(wait, Duration::from_secs(2));
        // Fresh orders (no backoff yet) held by the breaker wait for it too.
        assert_eq!(
            wake_after(now, None, Some(ready), 3, IDLE),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn nothing_waiting_sleeps_until_woken_or_claim_idle() {
        let now = Instant::now();
        assert_eq!(wake_after(now, None, None, 0, IDLE), IDLE);
        assert_eq!(
            wake_after(now, Some(now + IDLE * 2), None, 1, IDLE),
            IDLE * 2
        );
        assert_eq!(
            wake_after(now, None, None, 2, IDLE),
            Duration::from_millis(200),
            "waiting with no schedule (the outbox was not read): retry soon"
        );
    }
}
