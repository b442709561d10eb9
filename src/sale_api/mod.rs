//! The public sale routes (docs/contract.md, "Public HTTP API"):
//! `GET /sale/{sku}`, `POST /sale/{sku}/token`, `POST /sale/{sku}/order`,
//! `GET /sale/tickets/{ticket}`, and the built-in busy page `GET /sale/busy`.
//!
//! This is the HTTP side: it parses a request, calls the sale once ([`crate::sale::order`]
//! to place an order, [`crate::sale::lookup`] to find a ticket) and maps the answer to the
//! contract's status, headers and JSON ([`views`]).

pub mod order_body;
mod views;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::http::RequestBody;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::cluster::peers::Peers;
use crate::error::GatewayError;
use crate::http::response::{json, GatewayResponse};
use crate::http::server::Peer;
use arc_swap::ArcSwap;

use crate::pages::{Page, Pages, Values};
use crate::sale::admission;
use crate::sale::context::SaleContext;
use crate::sale::lookup::{find_ticket, Found};
use crate::sale::order::{place, Order, Placed};
use crate::sale::ticket::TicketStatus;
use crate::sale::{Sale, SaleState};
use crate::types::{unix_millis, TicketId, Token};
pub(crate) use views::ticket_view;
use views::{accepted, joined, prequeued, queue_full, relayed, status_view};

/// Largest order request body (it carries at most a token and a quantity).
const ORDER_BODY_LIMIT: usize = 4096;

/// A sale route, recognised from the path alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/sale/{sku}`
    Sale(&'a str),
    /// `/sale/{sku}/token`
    Token(&'a str),
    /// `/sale/{sku}/order`
    Order(&'a str),
    /// `/sale/tickets/{ticket}`
    Ticket(&'a str),
    /// `/sale/busy`
    Busy,
    /// `/sale/{sku}/wait`
    Wait(&'a str),
    /// A path under `/sale/` with an empty segment (`//`, a trailing `/`): answered 404
    /// here rather than proxied, so no lenient upstream reads it as a sale route.
    Unnormalised,
}

impl<'a> Route<'a> {
    /// The sale route `path` names, or `None` for a path that is proxied.
    pub fn of(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/sale/")?;
        if rest.contains("//") || rest.ends_with('/') || rest.starts_with('/') {
            return Some(Route::Unnormalised);
        }
        let mut parts = rest.split('/');
        let first = parts.next()?;
        let second = parts.next();
        if parts.next().is_some() {
            return None;
        }
        Some(match (first, second) {
            ("busy", None) => Route::Busy,
            ("tickets", Some(id)) => Route::Ticket(id),
            (sku, None) => Route::Sale(sku),
            (sku, Some("token")) => Route::Token(sku),
            (sku, Some("order")) => Route::Order(sku),
            (sku, Some("wait")) => Route::Wait(sku),
            _ => return None,
        })
    }
}

/// Handles sale routes.
#[derive(Clone)]
pub struct SaleApi {
    ctx: Arc<SaleContext>,
    /// The page templates: a reload replaces them.
    pages: Arc<ArcSwap<Pages>>,
    body_timeout: std::time::Duration,
    /// The other instances sharing the store (`None` with the memory store): tickets and
    /// tokens may reach any of them.
    peers: Option<Arc<Peers>>,
}

#[derive(Serialize)]
struct SaleView<'a> {
    sku: &'a str,
    state: SaleState,
    starts_at: Option<String>,
    ends_at: Option<String>,
    remaining: u64,
    queued: usize,
}

impl SaleApi {
    /// Routes over `ctx`, rendering `pages`; order bodies must arrive within `body_timeout`;
    /// `peers` when the store is shared with other instances.
    pub fn new(
        ctx: Arc<SaleContext>,
        pages: Arc<ArcSwap<Pages>>,
        body_timeout: std::time::Duration,
        peers: Option<Arc<Peers>>,
    ) -> Self {
        Self {
            ctx,
            pages,
            body_timeout,
            peers,
        }
    }

    /// Answers a request whose path is a sale route.
    pub async fn handle(
        &self,
        route: Route<'_>,
        req: Request<RequestBody>,
        peer: &Peer,
    ) -> GatewayResponse {
        let result = match (route, req.method()) {
            (Route::Sale(sku), &Method::GET | &Method::HEAD) => self.status(sku),
            (Route::Token(sku), &Method::POST) => self.token(sku, req.headers(), peer).await,
            (Route::Order(sku), &Method::POST) => {
                let sku = sku.to_owned();
                self.order(&sku, req, peer).await
            }
            // Boxed: an order's future would otherwise hold room for a poll's too.
            (Route::Ticket(id), &Method::GET | &Method::HEAD) => {
                Box::pin(self.ticket(id, peer.addr.ip())).await
            }
            (Route::Busy, &Method::GET | &Method::HEAD) => Ok(self.busy_page(req.uri().query())),
            (Route::Unnormalised, _) => Err(GatewayError::NotFound),
            (Route::Wait(sku), &Method::GET | &Method::HEAD) => {
                self.wait_page(sku, req.uri().query())
            }
            _ => Err(GatewayError::MethodNotAllowed),
        };
        result.unwrap_or_else(GatewayError::into_response)
    }

    fn sale(&self, sku: &str) -> Result<Arc<Sale>, GatewayError> {
        self.ctx.sale(sku)
    }

    fn status(&self, sku: &str) -> Result<GatewayResponse, GatewayError> {
        let sale = self.sale(sku)?;
        let terms = sale.terms();
        Ok(json(
            StatusCode::OK,
            &SaleView {
                sku: sale.sku.as_str(),
                state: sale.state(SystemTime::now()),
                starts_at: terms.starts_at.map(|t| t.to_string()),
                ends_at: terms.ends_at.map(|t| t.to_string()),
                remaining: sale.remaining(),
                queued: sale.queue.len(),
            },
        ))
    }

    async fn token(
        &self,
        sku: &str,
        headers: &HeaderMap,
        peer: &Peer,
    ) -> Result<GatewayResponse, GatewayError> {
        let user = self.ctx.identity.user(headers)?;
        let sale = self.sale(sku)?;
        admission::check_edge(&self.ctx, &sale, &user, peer.addr.ip(), SystemTime::now())?;
        // Signed here, remembered nowhere: the crowd's token requests never reach the store.
        // One issued for the pre-queue lasts its TTL from the opening: it is spent after it.
        let ttl = self.ctx.token_ttl;
        let now = SystemTime::now();
        let from = match sale.state(now) {
            SaleState::Prequeue => sale.starts().unwrap_or(now),
            _ => now,
        };
        let expires = unix_millis(from).saturating_add(ttl.as_millis() as u64);
        let token = self.ctx.tokens.issue(&sale.sku, &user, expires);
        Ok(json(
            StatusCode::OK,
            &json!({
                "token": token,
                "expires_in": expires.saturating_sub(unix_millis(now)) / 1000,
            }),
        ))
    }

    /// Parses an order, places it (the protocol is [`crate::sale::order`]) and maps what
    /// became of it to the contract's answer.
    async fn order(
        &self,
        sku: &str,
        req: Request<RequestBody>,
        peer: &Peer,
    ) -> Result<GatewayResponse, GatewayError> {
        let user = self.ctx.identity.user(req.headers())?;
        let sale = self.sale(sku)?.clone();
        let (token, quantity) =
            read_order(req, sale.terms().per_user_limit, self.body_timeout).await?;
        let order = Order {
            sale: sale.clone(),
            user,
            token,
            quantity,
            ip: peer.addr.ip(),
        };
        Ok(
            match place(&self.ctx, self.peers.as_deref(), order).await? {
                Placed::Queued { ticket, seq, line } => accepted(&sale, ticket, seq, line),
                Placed::Prequeued(ticket) => prequeued(&sale, ticket),
                Placed::Joined(ticket) => joined(&sale, ticket),
                Placed::Decided(outcome, ticket) => outcome.answer(ticket),
                Placed::QueueFull => queue_full(&sale),
            },
        )
    }

    /// The busy page; an unknown or malformed `sku` is left out rather than echoed.
    fn busy_page(&self, query: Option<&str>) -> GatewayResponse {
        let sale = query_param(query, "sku").and_then(|s| self.ctx.sales.get(s));
        let values = Values {
            sku: sale.as_ref().map_or("", |s| s.sku.as_str()),
            retry_after: sale.as_ref().map_or(1, |s| s.retry_after_secs()),
            ..Values::default()
        };
        self.pages.load().render(Page::Busy, &values)
    }

    /// The waiting room for `?ticket=`, or without one the countdown and buy page. A ticket
    /// that is not of our form is not echoed: the page says the link is not valid.
    fn wait_page(&self, sku: &str, query: Option<&str>) -> Result<GatewayResponse, GatewayError> {
        let sale = self.sale(sku)?;
        let ticket = query_param(query, "ticket");
        let Some(ticket) = ticket else {
            let terms = sale.terms();
            let values = Values {
                sku: sale.sku.as_str(),
                starts_at: terms.starts_at.map(|t| t.to_string()).unwrap_or_default(),
                starts_at_ms: terms.starts().map_or(0, crate::types::unix_millis),
                prequeue_at_ms: terms.prequeue_opens().map_or(0, crate::types::unix_millis),
                ..Values::default()
            };
            return Ok(self.pages.load().render(Page::Countdown, &values));
        };
        let ticket = TicketId::parse(ticket).map(|t| t.to_string());
        let values = Values {
            sku: sale.sku.as_str(),
            ticket: ticket.as_deref().unwrap_or(""),
            ..Values::default()
        };
        Ok(self.pages.load().render(Page::Wait, &values))
    }

    async fn ticket(&self, id: &str, client: IpAddr) -> Result<GatewayResponse, GatewayError> {
        let id = TicketId::parse(id).ok_or(GatewayError::UnknownTicket)?;
        Ok(
            match find_ticket(&self.ctx, self.peers.as_deref(), id, client).await? {
                Found::Here(ticket) => ticket_view(&self.ctx, id, &ticket),
                Found::Relayed {
                    status,
                    headers,
                    body,
                } => relayed(status, headers, body),
                Found::Decided(sku, outcome) => {
                    status_view(id, &sku, &TicketStatus::Done(outcome), None)
                }
            },
        )
    }
}

/// Reads the token (header `X-Sale-Token`, else JSON `{"token"}`) and the quantity.
async fn read_order(
    req: Request<RequestBody>,
    per_user_limit: u32,
    body_timeout: std::time::Duration,
) -> Result<(Token, u32), GatewayError> {
    let (parts, body) = req.into_parts();
    let mut tokens = parts.headers.get_all("x-sale-token").iter();
    let from_header = tokens.next().map(HeaderValue::as_bytes);
    if tokens.next().is_some() {
        return Err(GatewayError::BadRequest(
            "more than one X-Sale-Token header",
        ));
    }
    let bytes =
        crate::http::body::read(&parts.headers, body, ORDER_BODY_LIMIT, body_timeout).await?;
    order_body::parse(from_header, &bytes, per_user_limit)
}

/// The value of `name` in a query string, if present.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_from_the_path() {
        assert_eq!(Route::of("/sale/phone"), Some(Route::Sale("phone")));
        assert_eq!(Route::of("/sale/phone/token"), Some(Route::Token("phone")));
        assert_eq!(Route::of("/sale/phone/order"), Some(Route::Order("phone")));
        assert_eq!(Route::of("/sale/tickets/abc"), Some(Route::Ticket("abc")));
        assert_eq!(Route::of("/sale/busy"), Some(Route::Busy));
        assert_eq!(Route::of("/sale/phone/wait"), Some(Route::Wait("phone")));
        for odd in [
            "/sale/phone/order/",
            "/sale//phone/order",
            "/sale/phone//order",
            "/sale//",
        ] {
            assert_eq!(Route::of(odd), Some(Route::Unnormalised), "{odd}");
        }
        assert_eq!(Route::of("/sale/phone/reviews"), None);
        assert_eq!(Route::of("/sale/phone/order/x"), None);
        assert_eq!(Route::of("/sales/phone"), None);
        assert_eq!(Route::of("/api/x"), None);
    }
}
