//! How an admitted request ended: one type that knows its HTTP answer, its error code, its
//! metric label and its JSON, so that a new outcome is a compile error wherever it must be
//! handled.

use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::http::response::{json, GatewayResponse};
use crate::store::{OrderState, Reservation, ReserveReply};
use crate::types::{OrderId, TicketId};

/// The end of an admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stock reserved; the order waits for delivery.
    Reserved(OrderId),
    /// The backend acknowledged the order.
    Confirmed(OrderId),
    /// Delivery failed for good; the stock was put back.
    Failed(OrderId),
    /// The backend cancelled it after delivery (unpaid); its unit went back on sale.
    Cancelled(OrderId),
    /// No stock was left.
    SoldOut,
    /// The user already held the most units allowed.
    Duplicate,
    /// The token was unknown, expired, or not this user's or sale's.
    InvalidToken,
    /// The store did not answer; the token is left unspent.
    StoreUnavailable,
    /// The gateway shut down before the request reached the store.
    ShuttingDown,
    /// An operator ended the sale before the request reached the store.
    Closed,
}

impl Outcome {
    /// What the store's reserve step (or a replay of it) decided; a reserved order answers
    /// where it is now: confirmed, failed with its stock restored, or cancelled.
    pub fn of_reply(reply: &ReserveReply) -> Self {
        match reply.outcome {
            Reservation::Reserved { order_id, .. } => Self::of_order(order_id, reply.state),
            Reservation::SoldOut { .. } => Self::SoldOut,
            Reservation::LimitReached => Self::Duplicate,
            Reservation::InvalidToken => Self::InvalidToken,
        }
    }

    /// A reserved order's outcome from the order's state now.
    pub fn of_order(order: OrderId, state: Option<OrderState>) -> Self {
        match state {
            Some(OrderState::Confirmed) => Self::Confirmed(order),
            Some(OrderState::Failed) => Self::Failed(order),
            Some(OrderState::Cancelled) => Self::Cancelled(order),
            Some(OrderState::Reserved) | None => Self::Reserved(order),
        }
    }

    /// The order it made, if it made one.
    pub fn order(&self) -> Option<OrderId> {
        match self {
            Self::Reserved(o) | Self::Confirmed(o) | Self::Failed(o) | Self::Cancelled(o) => {
                Some(*o)
            }
            Self::SoldOut
            | Self::Duplicate
            | Self::InvalidToken
            | Self::StoreUnavailable
            | Self::ShuttingDown
            | Self::Closed => None,
        }
    }

    /// Its `outcome` label in `flashgate_reserve_total` (one of
    /// [`crate::metrics::RESERVE_OUTCOMES`]); a replayed order counts as reserved, whatever
    /// its state now.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Reserved(_) | Self::Confirmed(_) | Self::Failed(_) | Self::Cancelled(_) => {
                "reserved"
            }
            Self::SoldOut => "sold_out",
            Self::Duplicate => "duplicate",
            Self::InvalidToken => "invalid_token",
            Self::StoreUnavailable => "store_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Closed => "closed",
        }
    }

    /// The contract error it answers with; `None` for an order that stands.
    pub fn error(&self) -> Option<GatewayError> {
        match self {
            Self::Reserved(_) | Self::Confirmed(_) => None,
            Self::Failed(_) => Some(GatewayError::DeliveryFailed),
            Self::Cancelled(_) => Some(GatewayError::OrderCancelled),
            Self::SoldOut => Some(GatewayError::SoldOut),
            Self::Duplicate => Some(GatewayError::Duplicate),
            Self::InvalidToken => Some(GatewayError::InvalidToken),
            Self::StoreUnavailable => Some(GatewayError::StoreUnavailable),
            Self::ShuttingDown => Some(GatewayError::ShuttingDown),
            Self::Closed => Some(GatewayError::SaleClosed),
        }
    }

    /// The `status` a ticket reports once it ended here.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Reserved(_) => "reserved",
            Self::Confirmed(_) => "confirmed",
            Self::Cancelled(_) => "cancelled",
            Self::SoldOut => "sold_out",
            Self::Duplicate => "duplicate",
            Self::InvalidToken => "invalid_token",
            Self::Closed => "closed",
            Self::Failed(_) | Self::StoreUnavailable | Self::ShuttingDown => "failed",
        }
    }

    /// True when a resubmission of the same token must get this answer again: the store
    /// decided it. The others never reached the store and leave the token unspent, so a
    /// retry goes through.
    pub fn binds_token(&self) -> bool {
        match self {
            Self::Reserved(_)
            | Self::Confirmed(_)
            | Self::Failed(_)
            | Self::Cancelled(_)
            | Self::SoldOut
            | Self::Duplicate
            | Self::InvalidToken => true,
            Self::StoreUnavailable | Self::ShuttingDown | Self::Closed => false,
        }
    }

    /// Its fields in a ticket's JSON: `status`, `order_id` when it made an order, and
    /// `error` when the status is `failed` (the other refusals are their own status).
    pub fn fields(&self, into: &mut Map<String, Value>) {
        let word = self.word();
        into.insert("status".into(), word.into());
        if let Some(order) = self.order() {
            into.insert("order_id".into(), json!(order));
        }
        if let (Some(e), "failed") = (self.error(), word) {
            into.insert("error".into(), e.code().into());
        }
    }

    /// The answer to the order request itself (wait mode, or a replay): 201 with the order,
    /// or the contract error, carrying the order and ticket when there is an order.
    pub fn answer(&self, ticket: TicketId) -> GatewayResponse {
        let Some(e) = self.error() else {
            return json(
                StatusCode::CREATED,
                &json!({ "status": self.word(), "order_id": self.order(), "ticket": ticket }),
            );
        };
        let Some(order) = self.order() else {
            return e.into_response();
        };
        // The same answer on every instance: this order failed for good, stock went back.
        let mut resp = json(
            e.status(),
            &json!({ "error": e.code(), "message": e.to_string(), "order_id": order, "ticket": ticket }),
        );
        if let Some(secs) = e.retry_after() {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> [Outcome; 10] {
        let o = OrderId::random();
        [
            Outcome::Reserved(o),
            Outcome::Confirmed(o),
            Outcome::Failed(o),
            Outcome::SoldOut,
            Outcome::Duplicate,
            Outcome::InvalidToken,
            Outcome::StoreUnavailable,
            Outcome::ShuttingDown,
            Outcome::Cancelled(o),
            Outcome::Closed,
        ]
    }

    #[test]
    fn every_outcome_is_counted_under_a_known_label() {
        for o in all() {
            assert!(
                crate::metrics::RESERVE_OUTCOMES.contains(&o.label()),
                "{o:?}"
            );
        }
    }

    #[test]
    fn a_ticket_names_the_error_only_where_its_status_does_not() {
        for o in all() {
            let mut m = Map::new();
            o.fields(&mut m);
            let failed = m["status"] == "failed";
            assert_eq!(failed, m.contains_key("error"), "{o:?}");
            // A refusal's status names its error: `sold_out`, `closed` (`sale_closed`),
            // `cancelled` (`order_cancelled`).
            let status = m["status"].as_str().unwrap_or("");
            let named = o.error().is_some_and(|e| {
                e.code() == status || (!failed && e.code().ends_with(&format!("_{status}")))
            });
            assert_eq!(failed, o.error().is_some() && !named, "{o:?}");
            assert_eq!(m.contains_key("order_id"), o.order().is_some(), "{o:?}");
        }
    }
}
