//! The public sale routes (docs/contract.md, "Public HTTP API"):
//! `GET /sale/{sku}`, `POST /sale/{sku}/token`, `POST /sale/{sku}/order`,
//! `GET /sale/tickets/{ticket}`, and the built-in busy page `GET /sale/busy`.
//!
//! Every refusal on the order path before the queue is decided here, in process, from
//! atomics and the token's signature: the store is only touched by the order workers (at
//! the drain rate) and by replays of tokens this instance has no answer for.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use http::{HeaderMap, Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::config::{Overflow, ResponseMode};
use crate::error::{GatewayError, Refusal};
use crate::http::response::{json, GatewayResponse};
use crate::http::server::Peer;
use crate::pages::{Page, Pages, Values};
use crate::peers::{Asked, Peers};
use crate::repeats::warn_repeated;
use crate::sale::admission;
use crate::sale::context::SaleContext;
use crate::sale::outcome::Outcome;
use crate::sale::ticket::{Ticket, TicketStatus};
use crate::sale::{Sale, SaleState};
use crate::store::{StoreError, TicketRecord, TokenHold};
use crate::types::{unix_millis, TicketId, Token};

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
    pages: Arc<Pages>,
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
        pages: Pages,
        body_timeout: std::time::Duration,
        peers: Option<Arc<Peers>>,
    ) -> Self {
        Self {
            ctx,
            pages: Arc::new(pages),
            body_timeout,
            peers,
        }
    }

    /// Answers a request whose path is a sale route.
    pub async fn handle(
        &self,
        route: Route<'_>,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> GatewayResponse {
        let result = match (route, req.method()) {
            (Route::Sale(sku), &Method::GET | &Method::HEAD) => self.status(sku),
            (Route::Token(sku), &Method::POST) => self.token(sku, req.headers(), peer).await,
            (Route::Order(sku), &Method::POST) => {
                let sku = sku.to_owned();
                self.order(&sku, req, peer).await
            }
            (Route::Ticket(id), &Method::GET | &Method::HEAD) => self.ticket(id).await,
            (Route::Busy, &Method::GET | &Method::HEAD) => Ok(self.busy_page(req.uri().query())),
            (Route::Unnormalised, _) => Err(GatewayError::NotFound),
            (Route::Wait(sku), &Method::GET | &Method::HEAD) => {
                self.wait_page(sku, req.uri().query())
            }
            _ => Err(GatewayError::MethodNotAllowed),
        };
        result.unwrap_or_else(GatewayError::into_response)
    }

    fn sale(&self, sku: &str) -> Result<&Arc<Sale>, GatewayError> {
        self.ctx.sale(sku)
    }

    fn status(&self, sku: &str) -> Result<GatewayResponse, GatewayError> {
        let sale = self.sale(sku)?;
        Ok(json(
            StatusCode::OK,
            &SaleView {
                sku: sale.sku.as_str(),
                state: sale.state(SystemTime::now()),
                starts_at: sale.starts_at.map(|t| t.to_string()),
                ends_at: sale.ends_at.map(|t| t.to_string()),
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
        admission::check_edge(&self.ctx, sale, &user, peer.addr.ip(), SystemTime::now())?;
        // Signed here, remembered nowhere: the crowd's token requests never reach the store.
        let ttl = self.ctx.token_ttl;
        let expires = unix_millis(SystemTime::now()).saturating_add(ttl.as_millis() as u64);
        let token = self.ctx.tokens.issue(&sale.sku, &user, expires);
        Ok(json(
            StatusCode::OK,
            &json!({ "token": token, "expires_in": ttl.as_secs() }),
        ))
    }

    async fn order(
        &self,
        sku: &str,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> Result<GatewayResponse, GatewayError> {
        let user = self.ctx.identity.user(req.headers())?;
        let sale = self.sale(sku)?.clone();
        let (token, quantity) = read_order(req, sale.per_user_limit, self.body_timeout).await?;
        let counters = self.ctx.counters(&sale.sku);
        // Counts one admission decision of this order (one of ADMISSION_OUTCOMES).
        let count = |label: &'static str| {
            if let Some(c) = counters {
                c.admission(label);
            }
        };
        // Forged, another user's or another sale's: refused here, before any state is read.
        if self
            .ctx
            .tokens
            .check_binding(&token, &sale.sku, &user)
            .is_err()
        {
            count("invalid_token");
            return Err(GatewayError::InvalidToken);
        }
        // A token seen before gets its first answer again, whatever the sale's state now:
        // a double click joins the request already queued, a resubmission after the sale
        // sold out still learns it won.
        if let Some((ticket, t)) = self.ctx.tickets.by_token(&token) {
            if t.user == user && t.sku == sale.sku && t.status.binds_token() {
                return Ok(match t.status {
                    TicketStatus::Queued | TicketStatus::Processing => {
                        accepted(&sale, ticket, t.seq)
                    }
                    TicketStatus::Done(Outcome::Reserved(order)) => {
                        self.current_state(&sale, order).await.answer(ticket)
                    }
                    TicketStatus::Done(outcome) => outcome.answer(ticket),
                });
            }
        }
        // Expired: checked after the ticket book, so that a double click on a token that
        // expired while queued still joins its request; and a token spent before it expired
        // gets its first answer from the store (one read, paid with a rate credit).
        if token.expires_ms() < unix_millis(SystemTime::now()) {
            if let Err(limited) = admission::check_rate(&self.ctx, &user, peer.addr.ip()) {
                count(limited.label());
                return Err(limited.into());
            }
            let replayed = self
                .replay_from_store(&sale, &token, &user, admission::Unspent::Leave)
                .await?;
            return match replayed {
                Some(outcome) => Ok(outcome.answer(TicketId::random())),
                None => {
                    count("invalid_token");
                    Err(GatewayError::InvalidToken)
                }
            };
        }
        let decided = Instant::now();
        let checked =
            admission::precheck(&self.ctx, &sale, &user, peer.addr.ip(), SystemTime::now());
        let mut took = decided.elapsed();
        // With a shared store the same token may reach another instance too: it is held for
        // this request before the request takes a place, so that it is queued once.
        let mut hold = None;
        let decision = match checked {
            Err(refusal) => Err(refusal),
            Ok(()) => {
                let ticket = self.ctx.tokens.new_ticket(&self.ctx.owner);
                if self.peers.is_some() {
                    match self.hold(&sale, &token, &user, ticket).await? {
                        Held::Here(guard) => hold = Some(guard),
                        Held::Elsewhere(answer) => return Ok(answer),
                    }
                }
                let slotting = Instant::now();
                let slot = admission::take_slot(&self.ctx, &sale, ticket);
                took += slotting.elapsed();
                slot
            }
        };
        self.ctx
            .metrics
            .admission_seconds
            .observe(took.as_secs_f64());
        let count_full = || {
            count(match sale.settings.overflow {
                Overflow::Redirect => "redirected",
                Overflow::Reject => Refusal::QueueFull.label(),
            })
        };
        let mut slot = match decision {
            Ok(slot) => slot,
            Err(Refusal::QueueFull) => {
                count_full();
                return Ok(queue_full(&sale));
            }
            Err(refusal) => {
                // A token this instance has no answer for may have been spent already:
                // before a final refusal contradicts its outcome, that outcome is read
                // from the store. Only a refusal that stands is counted as one (a token
                // spent now as sold out is refused sold out; an earlier order is a replay).
                let replayed = match admission::replay_first(&refusal) {
                    Some(unspent) => {
                        // The read costs a rate credit, so a refused client cannot make
                        // the gateway read the store at its own pace.
                        if let Err(limited) =
                            admission::check_rate(&self.ctx, &user, peer.addr.ip())
                        {
                            count(limited.label());
                            return Err(limited.into());
                        }
                        match self.replay_from_store(&sale, &token, &user, unspent).await {
                            Ok(replayed) => replayed,
                            Err(e) => {
                                count(refusal.label());
                                return Err(e);
                            }
                        }
                    }
                    None => None,
                };
                let stands = match (&refusal, replayed) {
                    (_, None) | (Refusal::SoldOut, Some(Outcome::SoldOut)) => true,
                    (_, Some(_)) => false,
                };
                if stands {
                    count(refusal.label());
                }
                return match replayed {
                    // No ticket of this instance followed it: the answer carries none of ours.
                    Some(outcome) => Ok(outcome.answer(TicketId::random())),
                    None => Err(refusal.into()),
                };
            }
        };
        let (seq, ticket) = (slot.seq(), slot.ticket());
        if !self
            .ctx
            .tickets
            .open(ticket, sale.sku.clone(), seq, user.clone(), token)
        {
            // Every remembered ticket is still unfinished: as good as a full queue (the
            // dropped slot goes back).
            count_full();
            return Ok(queue_full(&sale));
        }
        count("admitted");
        let (reply, outcome) = match sale.settings.response {
            ResponseMode::Wait => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            ResponseMode::Async => (None, None),
        };
        if hold.is_some() {
            slot.mark_held();
        }
        slot.fill(user, token, quantity, reply);
        // Queued: the drain lets go of the hold if the outcome leaves the token unspent.
        if let Some(guard) = hold {
            guard.disarm();
        }
        if let Some(rx) = outcome {
            if let Ok(Ok(outcome)) = tokio::time::timeout(sale.settings.max_wait, rx).await {
                return Ok(outcome.answer(ticket));
            }
        }
        Ok(accepted(&sale, ticket, seq))
    }

    /// Holds `token` in the shared store for this request's `ticket`; or the answer of the
    /// request (maybe on another instance) that holds it or spent it.
    async fn hold(
        &self,
        sale: &Sale,
        token: &Token,
        user: &crate::types::UserId,
        ticket: TicketId,
    ) -> Result<Held, GatewayError> {
        let until = token
            .expires_ms()
            .saturating_add(self.ctx.tickets.ttl().as_millis() as u64);
        let store = &self.ctx.store;
        // From here until it is queued (or refused), this request is on its way in: a
        // double click finds its hold and joins it. The guard unmarks it, and lets go of
        // the hold unless disarmed, whatever happens.
        self.ctx.tickets.set_arriving(&ticket, true);
        let mut guard = HoldGuard {
            ctx: self.ctx.clone(),
            sku: sale.sku.clone(),
            token: *token,
            ticket,
            armed: true,
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let held = store
                .hold_token(&sale.sku, token, user, &ticket, until)
                .await
                .map_err(|e| {
                    warn_repeated!("cannot hold a token", sku = %sale.sku, error = %e);
                    GatewayError::StoreUnavailable
                })?;
            return Ok(match held {
                TokenHold::Held => Held::Here(guard),
                // A hold whose request is gone (its instance stopped, or its release was
                // lost): let go of it and hold again, once.
                TokenHold::Queued(other) if tries == 1 && self.is_stale(&other).await => {
                    let _ = store.release_token(&sale.sku, token, &other).await;
                    continue;
                }
                // Not held for this ticket: nothing to let go.
                TokenHold::Queued(other) => {
                    guard.armed = false;
                    Held::Elsewhere(joined(other))
                }
                // No ticket of this instance followed it: the answer carries none of ours.
                TokenHold::Spent(reply) => {
                    guard.armed = false;
                    Held::Elsewhere(Outcome::of_reply(&reply).answer(TicketId::random()))
                }
            });
        }
    }

    /// True when the request of ticket `other` that holds a token is gone, or ended
    /// leaving the token unspent: its hold outlived it (its instance stopped, a release
    /// was lost, or the hold's reply was lost and the request never queued).
    async fn is_stale(&self, other: &TicketId) -> bool {
        if other.owner() == self.ctx.owner {
            // On its way into the queue (a double click's first request): not stale. Read
            // before the book: a request is put in the book before it stops arriving, so
            // "not arriving" then "not in the book" cannot be one that moved between the
            // two reads (read the other way round, a double click under load queued twice).
            if self.ctx.tickets.is_arriving(other) {
                return false;
            }
            // Not in the book either: a request that never got there (its hold's reply was
            // lost); in it, stale once its outcome left the token unspent.
            return match self.ctx.tickets.get(other) {
                Some(t) => !t.status.binds_token(),
                None => true,
            };
        }
        let Some(peers) = &self.peers else {
            return false;
        };
        match peers.ask_ticket(other).await {
            Asked::Gone => true,
            Asked::Answered { status, body, .. } => {
                status == StatusCode::NOT_FOUND || leaves_token_unspent(&body)
            }
            // It may still decide it.
            Asked::Unreachable => false,
        }
    }

    /// A reserved order's outcome now. With a shared store another instance may have
    /// confirmed or compensated it, so the store is asked (one read); with the memory store
    /// this instance's deliverer keeps its tickets current. If the store does not answer,
    /// what this instance knows.
    async fn current_state(&self, sale: &Sale, order: crate::types::OrderId) -> Outcome {
        if !self.ctx.shared {
            return Outcome::Reserved(order);
        }
        match self.ctx.store.order_state(&sale.sku, &order).await {
            Ok(state) => Outcome::of_order(order, state),
            Err(_) => Outcome::Reserved(order),
        }
    }

    /// The recorded outcome of `token` if `user` spent it already, as the answer to give.
    async fn replay_from_store(
        &self,
        sale: &Sale,
        token: &Token,
        user: &crate::types::UserId,
        unspent: admission::Unspent,
    ) -> Result<Option<Outcome>, GatewayError> {
        let outcome = self
            .ctx
            .replay(sale, token, user, unspent)
            .await
            .map_err(|e| {
                warn_repeated!("cannot read a token's outcome", sku = %sale.sku, error = %e);
                GatewayError::StoreUnavailable
            })?;
        Ok(outcome)
    }

    /// The busy page; an unknown or malformed `sku` is left out rather than echoed.
    fn busy_page(&self, query: Option<&str>) -> GatewayResponse {
        let sale = query_param(query, "sku").and_then(|s| self.ctx.sales.get(s));
        let values = Values {
            sku: sale.map_or("", |s| s.sku.as_str()),
            retry_after: sale.map_or(1, |s| s.retry_after_secs()),
            ..Values::default()
        };
        self.pages.render(Page::Busy, &values)
    }

    /// The waiting room for `?ticket=`, or without one the countdown and buy page. A ticket
    /// that is not of our form is not echoed: the page says the link is not valid.
    fn wait_page(&self, sku: &str, query: Option<&str>) -> Result<GatewayResponse, GatewayError> {
        let sale = self.sale(sku)?;
        let ticket = query_param(query, "ticket");
        let Some(ticket) = ticket else {
            let starts = sale.starts_at.map(|t| t.system_time());
            let values = Values {
                sku: sale.sku.as_str(),
                starts_at: sale.starts_at.map(|t| t.to_string()).unwrap_or_default(),
                starts_at_ms: starts.map_or(0, crate::types::unix_millis),
                ..Values::default()
            };
            return Ok(self.pages.render(Page::Countdown, &values));
        };
        let ticket = TicketId::parse(ticket).map(|t| t.to_string());
        let values = Values {
            sku: sale.sku.as_str(),
            ticket: ticket.as_deref().unwrap_or(""),
            ..Values::default()
        };
        Ok(self.pages.render(Page::Wait, &values))
    }

    async fn ticket(&self, id: &str) -> Result<GatewayResponse, GatewayError> {
        let id = TicketId::parse(id).ok_or(GatewayError::UnknownTicket)?;
        if let Some(ticket) = self.ctx.tickets.get(&id) {
            return Ok(ticket_view(&self.ctx, id, &ticket));
        }
        // Another instance's ticket: its owner answers, else the store says what became
        // of it.
        let Some(peers) = &self.peers else {
            return Err(GatewayError::UnknownTicket);
        };
        // This process's own, or one no instance issued (its MAC says so): nobody else
        // knows it, and the store is not asked.
        if id.owner() == self.ctx.owner || !self.ctx.tokens.issued(&id) {
            return Err(GatewayError::UnknownTicket);
        }
        let owner_gone = match peers.ask_ticket(&id).await {
            Asked::Answered {
                status,
                headers,
                body,
            } => return Ok(relayed(status, headers, body)),
            Asked::Gone => true,
            Asked::Unreachable => false,
        };
        match self.ticket_record(&id).await? {
            Some((sku, TicketRecord::Decided(reply))) => {
                let outcome = Outcome::of_reply(&reply);
                Ok(status_view(id, &sku, &TicketStatus::Done(outcome), None))
            }
            // Nothing was reserved for it; its owner can no longer decide it.
            Some((_, TicketRecord::Queued)) if owner_gone => Err(GatewayError::TicketLost),
            Some((_, TicketRecord::Queued)) => Err(GatewayError::TicketUnavailable),
            None if owner_gone => Err(GatewayError::UnknownTicket),
            None => Err(GatewayError::TicketUnavailable),
        }
    }

    /// The store's record of `ticket`, looked for in every sale (a ticket names no sale;
    /// only polls its owner could not answer come here).
    async fn ticket_record(
        &self,
        ticket: &TicketId,
    ) -> Result<Option<(crate::types::Sku, TicketRecord)>, GatewayError> {
        for sale in self.ctx.sales.iter() {
            match self.ctx.store.ticket_record(&sale.sku, ticket).await {
                Ok(Some(record)) => return Ok(Some((sale.sku.clone(), record))),
                Ok(None) | Err(StoreError::UnknownSale(_)) => {}
                Err(e) => {
                    warn_repeated!("cannot read a ticket's record", sku = %sale.sku, error = %e);
                    return Err(GatewayError::StoreUnavailable);
                }
            }
        }
        Ok(None)
    }
}

/// Where a token is held for a queued request.
enum Held {
    /// Here, for this request: let go if the request does not get queued.
    Here(HoldGuard),
    /// Elsewhere (another request, maybe on another instance), or spent: its answer.
    Elsewhere(GatewayResponse),
}

/// A token held for a request not queued yet: dropped armed (the request was refused, its
/// client went away first, or the hold's answer was lost), the hold is let go.
struct HoldGuard {
    ctx: Arc<SaleContext>,
    sku: crate::types::Sku,
    token: Token,
    ticket: TicketId,
    armed: bool,
}

impl HoldGuard {
    /// The request is queued: its outcome decides what becomes of the hold.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.ctx.tickets.set_arriving(&self.ticket, false);
        if !self.armed {
            return;
        }
        let (store, sku, token, ticket) = (
            self.ctx.store.clone(),
            self.sku.clone(),
            self.token,
            self.ticket,
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release_token(&sku, &token, &ticket).await {
                    tracing::debug!(%sku, error = %e, "cannot let go of a token's hold");
                }
            });
        }
    }
}

/// 202 for a token already queued under `ticket` (maybe on another instance): follow that.
fn joined(ticket: TicketId) -> GatewayResponse {
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

/// True when a ticket's JSON says its request ended without spending its token.
fn leaves_token_unspent(ticket_json: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(ticket_json)
        .ok()
        .and_then(|v| {
            v["error"]
                .as_str()
                .map(|e| matches!(e, "store_unavailable" | "shutting_down"))
        })
        .unwrap_or(false)
}

/// Another instance's answer about its ticket, passed on.
fn relayed(
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

/// Reads the token (header `X-Sale-Token`, else JSON `{"token"}`) and the quantity.
async fn read_order(
    req: Request<Incoming>,
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
    crate::order_body::parse(from_header, &bytes, per_user_limit)
}

/// 202 with the ticket, its position and ETA, and where to follow it.
fn accepted(sale: &Sale, ticket: TicketId, seq: u64) -> GatewayResponse {
    let position = sale.queue.position(seq).unwrap_or(0);
    let mut resp = json(
        StatusCode::ACCEPTED,
        &json!({
            "status": "queued",
            "ticket": ticket,
            "position": position,
            "eta_ms": sale.eta_ms(position),
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
    let place = ctx.sales.get(t.sku.as_str()).map(|sale| {
        let p = sale.queue.position(t.seq).unwrap_or(0);
        (p, sale.eta_ms(p))
    });
    status_view(id, &t.sku, &t.status, place)
}

/// A ticket's answer: where it is (`place`: position and ETA while queued) or its outcome.
fn status_view(
    id: TicketId,
    sku: &crate::types::Sku,
    status: &TicketStatus,
    place: Option<(u64, u64)>,
) -> GatewayResponse {
    let mut body = serde_json::Map::new();
    body.insert("ticket".into(), json!(id));
    body.insert("sku".into(), sku.as_str().into());
    match status {
        TicketStatus::Queued | TicketStatus::Processing => {
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
fn queue_full(sale: &Sale) -> GatewayResponse {
    let mut resp = GatewayError::QueueFull {
        retry_after: sale.retry_after_secs(),
    }
    .into_response();
    if sale.settings.overflow == Overflow::Redirect {
        let target = if sale.settings.redirect_url.is_empty() {
            format!("/sale/busy?sku={}", sale.sku)
        } else {
            sale.settings.redirect_url.clone()
        };
        *resp.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&target) {
            resp.headers_mut().insert(LOCATION, v);
        }
    }
    resp
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
