//! `POST /admin/orders/{order_id}/cancel`: an order the backend gave up after delivery (the
//! buyer never paid) hands its units back to the sale and its buyer's allowance back, once
//! however often it is called (the store decides it in one step, by order id).

use std::net::SocketAddr;

use http::StatusCode;
use serde_json::json;

use crate::error::GatewayError;
use crate::http::response::{json, GatewayResponse};
use crate::sale::context::SaleContext;
use crate::sale::outcome::Outcome;
use crate::sale::Sale;
use crate::store::{Cancellable, Cancellation, StoreError};
use crate::types::OrderId;

/// Cancels order `id` in whichever sale's store holds it. The order id names no sale, so
/// each sale is asked in turn (one store step each, until one knows it): cancels are rare,
/// and a gateway runs a handful of sales.
pub async fn cancel(
    ctx: &SaleContext,
    cancellable: Cancellable,
    peer: SocketAddr,
    id: &str,
) -> Result<GatewayResponse, GatewayError> {
    let order = OrderId::parse(id).ok_or(GatewayError::BadRequest(
        "the order id is 32 lowercase hex digits",
    ))?;
    let mut sales = ctx.sales.all();
    sales.sort_by(|a, b| a.sku.cmp(&b.sku));
    // A sale whose store did not answer may hold it: then "unknown" would be a guess; so
    // would it be for a sale whose store lost its state (held), until stock is loaded.
    let mut unanswered = false;
    let held = sales.iter().any(|s| s.is_held());
    for sale in sales {
        match ctx.store.cancel(&sale.sku, &order, cancellable).await {
            Ok(Cancellation::Unknown) | Err(StoreError::UnknownSale(_)) => {}
            Ok(done) => return answer(ctx, peer, &sale, order, done),
            Err(e) => {
                tracing::warn!(%peer, sku = %sale.sku, %order, error = %e,
                    "cannot ask the store to cancel an order");
                unanswered = true;
            }
        }
    }
    Err(match (unanswered, held) {
        (true, _) => GatewayError::StoreUnavailable,
        (false, true) => GatewayError::SaleHeld,
        (false, false) => GatewayError::UnknownOrder,
    })
}

/// The answer to what the store did with the cancel.
fn answer(
    ctx: &SaleContext,
    peer: SocketAddr,
    sale: &Sale,
    order: OrderId,
    done: Cancellation,
) -> Result<GatewayResponse, GatewayError> {
    let Cancellation::Cancelled {
        now,
        restocked,
        remaining,
        user_id,
        quantity,
    } = done
    else {
        return Err(match done {
            Cancellation::NotDelivered => GatewayError::OrderNotDelivered,
            Cancellation::Compensated => GatewayError::OrderCompensated,
            // The store lost the sale's stock: nothing changed; once an operator loads it
            // again, the cancel gives the allowance back but no unit (the new figure
            // stands).
            Cancellation::NoStock => GatewayError::SaleHeld,
            _ => GatewayError::UnknownOrder,
        });
    };
    if now {
        sale.counters.cancellations[usize::from(!restocked)].inc();
        if restocked && !sale.is_held() {
            sale.set_remaining(remaining);
        }
        tracing::info!(%peer, sku = %sale.sku, %order, user = %user_id, quantity, restocked,
            remaining, "order cancelled");
    }
    // This instance's tickets and token replays answer "cancelled" at once; the others'
    // read the order's state from a shared store when asked.
    ctx.order_settled(&order, Outcome::Cancelled(order));
    Ok(json(
        StatusCode::OK,
        &json!({
            "order_id": order,
            "sku": sale.sku.as_str(),
            "user_id": user_id,
            "quantity": quantity,
            "status": "cancelled",
            "restocked": restocked,
            "remaining": remaining,
            "already_cancelled": !now,
        }),
    ))
}
