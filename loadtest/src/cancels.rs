//! The backend's unpaid orders: a share of the orders it applied is cancelled once its
//! payment window has passed, through the gateway's `POST /admin/orders/{id}/cancel` (as a
//! real backend would), and recorded as cancelled in its ledger only once the gateway took
//! the units back.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::scenario::Backend;
use crate::stack::Stack;

/// How often the backend's ledger is read for new orders.
const SCAN_EVERY: Duration = Duration::from_millis(100);
/// Most attempts at one cancel (100 ms apart, round the instances): a gateway restarting
/// or an order whose confirmation is not recorded yet answers "not now" for a while.
const ATTEMPTS: usize = 100;

/// What the backend's cancels came to.
#[derive(Debug, Default, Clone)]
pub struct Cancels {
    /// Cancels the gateway took: each order's units handed back (`restocked`) or not.
    pub cancelled: Vec<(String, bool)>,
    /// Cancels the gateway refused for good, or never answered: order and why.
    pub failures: Vec<(String, String)>,
}

/// Whether the backend cancels order `id`: a fixed share of the order ids, spread by their
/// (random) digits.
pub fn chosen(id: &str, rate: f64) -> bool {
    let Some(digits) = id.get(..8).and_then(|d| u32::from_str_radix(d, 16).ok()) else {
        return false;
    };
    f64::from(digits) / f64::from(u32::MAX) < rate
}

/// Cancels a share of `sku`'s orders `backend.cancel_after` after each reached the
/// backend, until `crowd_over`; then cancels at once those chosen and not cancelled yet,
/// and returns. Does nothing without a `cancel_rate`.
pub async fn run(
    stack: &Stack,
    sku: &str,
    backend: &Backend,
    crowd_over: CancellationToken,
) -> Cancels {
    let mut out = Cancels::default();
    if backend.cancel_rate <= 0.0 {
        return out;
    }
    let mut seen = HashSet::new();
    let mut due: Vec<(u64, String)> = Vec::new();
    let window_ms = backend.cancel_after.as_millis() as u64;
    let mut turn = 0;
    loop {
        let over = crowd_over.is_cancelled();
        for (id, arrived_ms) in stack.demo.applied(sku) {
            if seen.insert(id.clone()) && chosen(&id, backend.cancel_rate) {
                due.push((arrived_ms + window_ms, id));
            }
        }
        let now = flashgate::types::unix_millis(SystemTime::now());
        let (ripe, later): (Vec<_>, Vec<_>) =
            due.into_iter().partition(|(at, _)| over || *at <= now);
        due = later;
        for (_, id) in ripe {
            turn += 1;
            cancel_one(stack, &id, turn, &mut out).await;
        }
        if over {
            return out;
        }
        tokio::select! {
            _ = crowd_over.cancelled() => {}
            _ = tokio::time::sleep(SCAN_EVERY) => {}
        }
    }
}

/// Asks the gateway to cancel `id` until it answers for good, starting at instance `turn`.
async fn cancel_one(stack: &Stack, id: &str, turn: usize, out: &mut Cancels) {
    let mut last = String::new();
    for k in 0..ATTEMPTS {
        match stack.cancel_order(turn + k, id).await {
            Ok((StatusCode::OK, body)) => {
                stack.demo.cancel(id);
                let restocked = body["restocked"].as_bool().unwrap_or(false);
                out.cancelled.push((id.to_owned(), restocked));
                return;
            }
            Ok((status, body)) => {
                let code = body["error"].as_str().unwrap_or("").to_owned();
                // Not confirmed in the store yet, or an instance or the store not there.
                let not_now = matches!(
                    code.as_str(),
                    "order_not_delivered" | "store_unavailable" | "shutting_down"
                );
                if !not_now {
                    out.failures
                        .push((id.to_owned(), format!("{status} {code}")));
                    return;
                }
                last = format!("{status} {code}");
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.failures
        .push((id.to_owned(), format!("no answer for good: {last}")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_share_follows_the_rate() {
        let ids: Vec<String> = (0..10_000u32)
            .map(|i| format!("{:08x}{}", i.wrapping_mul(2_654_435_761), "0".repeat(24)))
            .collect();
        let share = |rate| ids.iter().filter(|id| chosen(id, rate)).count();
        assert_eq!(share(0.0), 0);
        assert_eq!(share(1.0), ids.len());
        let tenth = share(0.1);
        assert!((900..=1100).contains(&tenth), "{tenth}");
        assert!(!chosen("not hex", 1.0));
    }
}
