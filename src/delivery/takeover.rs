//! Taking over the orders of instances that are gone: once a heartbeat, every sale's
//! orders held by deliverers whose instance is no longer in the store's list move to this
//! deliverer. It runs beside the delivery rounds, so a round waiting on a slow backend does
//! not delay it; it hands the taken orders' ids to the rounds, which treat them as orders
//! of unknown fate (what the gone deliverer did with them is unknown).

use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::cluster::membership::Membership;
use crate::sale::context::SaleContext;
use crate::types::OrderId;

/// Looks for gone instances' orders every heartbeat until `shutdown`; sends each order
/// taken to `taken`. Holds `claiming` while it takes: a round holds it while it reads the
/// outbox, so a round never reads a taken order before hearing that it was taken.
pub(super) async fn run(
    ctx: Arc<SaleContext>,
    membership: Arc<Membership>,
    consumer: String,
    claiming: Arc<Mutex<()>>,
    taken: mpsc::UnboundedSender<OrderId>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(membership.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // No recent list of the live instances: nothing is known to be gone.
        let Some(live) = membership.live_consumers() else {
            continue;
        };
        // Idle for a member TTL: an order touched since the list was read is its owner's.
        let min_idle = membership.member_ttl();
        for sale in &ctx.sales.all() {
            let _claiming = claiming.lock().await;
            match ctx
                .store
                .take_over(&sale.sku, &consumer, &live, min_idle)
                .await
            {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    tracing::info!(sku = %sale.sku, orders = ids.len(),
                        "took over the orders of an instance that is gone");
                    for id in ids {
                        let _ = taken.send(id);
                    }
                    ctx.outbox_ready.notify_one();
                }
                // The breaker logs the store's trouble; the next heartbeat looks again.
                Err(e) => tracing::debug!(sku = %sale.sku, error = %e, "cannot take over orders"),
            }
        }
    }
}
