//! The sale routes' answers: status, headers and JSON body for each thing that can become
//! of an order or a ticket (docs/contract.md, "Public HTTP API").

use http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use http::StatusCode;
use serde_json::json;

use crate::config::Overflow;
use crate::error::GatewayError;
use crate::http::response::{json, GatewayResponse};
use crate::sale::context::SaleContext;
use crate::sale::ticket::{Ticket, TicketStatus};
use crate::sale::Sale;
use crate::types::{Sku, TicketId};

/// 202 for a token already queued under `ticket` (maybe on another instance): follow that.
/// Before the opening, the pre-queue's answer.
pub(super) fn joined(sale: &Sale, ticket: TicketId) -> GatewayResponse {
    if sale.state(std::time::SystemTime::now()) == crate::sale::SaleState::Prequeue {
        return prequeued(sale, ticket);
    }
    let mut resp = json(
        StatusCode::ACCEPTED,
        &json!({ "status": "queued", "ticket": ticket }),
    );
    let h = resp.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(&format!("/sale/tickets/{ticket}")) {
        h.insert(LOCATION, loc);
    }
    h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// 202 for an order in the sale's pre-queue: no place yet (it is drawn at the opening),
/// the opening time, and where to follow the ticket — polled no more often than the time
/// left to the opening (at most every 30 s) says.
pub(super) fn prequeued(sale: &Sale, ticket: TicketId) -> GatewayResponse {
    let mut resp = json(
        StatusCode::ACCEPTED,
        &json!({
            "status": "prequeued",
            "ticket": ticket,
            "sku": sale.sku.as_str(),
            "starts_at": sale.terms().starts_at.map(|t| t.to_string()),
        }),
    );
    let h = resp.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(&format!("/sale/tickets/{ticket}")) {
        h.insert(LOCATION, loc);
    }
    h.insert(RETRY_AFTER, HeaderValue::from(until_opening_secs(sale)));
    resp
}

/// Seconds until `sale` opens, within 1..=30: how long a pre-queued buyer waits to poll.
fn until_opening_secs(sale: &Sale) -> u64 {
    sale.starts()
        .and_then(|s| s.duration_since(std::time::SystemTime::now()).ok())
        .map_or(1, |d| d.as_secs().clamp(1, 30))
}

/// Another instance's answer about its ticket, passed on.
pub(super) fn relayed(
    status: StatusCode,
    headers: Vec<(http::HeaderName, HeaderValue)>,
    body: bytes::Bytes,
) -> GatewayResponse {
    let mut resp = GatewayResponse::new(http_body_util::Either::Right(http_body_util::Full::new(
        body,
    )));
    *resp.status_mut() = status;
    resp.headers_mut().extend(headers);
    resp
}

/// 202 with the ticket, its position and ETA, and where to follow it.
pub(super) fn accepted(
    sale: &Sale,
    ticket: TicketId,
    seq: u64,
    line: Option<u64>,
) -> GatewayResponse {
    let (position, eta_ms) = sale.place(seq, line);
    let mut resp = json(
        StatusCode::ACCEPTED,
        &json!({
            "status": "queued",
            "ticket": ticket,
            "position": position,
            "eta_ms": eta_ms,
        }),
    );
    let h = resp.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(&format!("/sale/tickets/{ticket}")) {
        h.insert(LOCATION, loc);
    }
    h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// A ticket of this instance, as `GET /sale/tickets/{id}` answers it (here, or through
/// another instance that was asked about it).
pub(crate) fn ticket_view(ctx: &SaleContext, id: TicketId, t: &Ticket) -> GatewayResponse {
    let sale = ctx.sales.get(t.sku.as_str());
    if t.status == TicketStatus::Prequeued {
        if let Some(sale) = sale {
            let mut resp = prequeued(&sale, id);
            // A poll's answer: the ticket is found.
            *resp.status_mut() = StatusCode::OK;
            resp.headers_mut().remove(http::header::LOCATION);
            return resp;
        }
    }
    let place = sale.map(|sale| sale.place(t.seq, t.line));
    status_view(id, &t.sku, &t.status, place)
}

/// A ticket's answer: where it is (`place`: position and ETA while queued) or its outcome.
pub(super) fn status_view(
    id: TicketId,
    sku: &Sku,
    status: &TicketStatus,
    place: Option<(u64, u64)>,
) -> GatewayResponse {
    let mut body = serde_json::Map::new();
    body.insert("ticket".into(), json!(id));
    body.insert("sku".into(), sku.as_str().into());
    match status {
        // Only this instance's own tickets are pre-queued ([`ticket_view`]).
        TicketStatus::Prequeued | TicketStatus::Queued | TicketStatus::Processing => {
            let (position, eta) = place.unwrap_or((0, 0));
            body.insert("status".into(), "queued".into());
            body.insert("position".into(), position.into());
            body.insert("eta_ms".into(), eta.into());
        }
        TicketStatus::Done(outcome) => outcome.fields(&mut body),
    }
    let mut resp = json(StatusCode::OK, &body);
    if !status.is_final() {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A full queue's answer: 503 `queue_full` with Retry-After, or with
/// `overflow = "redirect"` a 303 to the busy page carrying the same JSON body.
pub(super) fn queue_full(sale: &Sale) -> GatewayResponse {
    let mut resp = GatewayError::QueueFull {
        retry_after: sale.retry_after_secs(),
    }
    .into_response();
    let terms = sale.terms();
    if terms.settings.overflow == Overflow::Redirect {
        let target = if terms.settings.redirect_url.is_empty() {
            format!("/sale/busy?sku={}", sale.sku)
        } else {
            terms.settings.redirect_url.clone()
        };
        *resp.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&target) {
            resp.headers_mut().insert(LOCATION, v);
        }
    }
    resp
}
