//! The admin API on the admin listener, behind a bearer token: list sales with live
//! figures, pause and resume a sale, change its drain rate, load its stock.
//!
//! | request | does |
//! |---|---|
//! | `GET /admin/sales` | every sale: state, remaining, queued, pending, capacity, drain rate (total) and this instance's share, paused |
//! | `POST /admin/sales/{sku}/pause`, `…/resume` | stops / restarts admission and the drain |
//! | `POST /admin/sales/{sku}/hold`, `…/release` | holds / restarts the drain alone: admission goes on filling the queue |
//! | `PUT /admin/sales/{sku}/drain_rate` `{"rate": n}` | changes the drain rate (the total of every instance) |
//! | `PUT /admin/sales/{sku}/capacity` `{"capacity": n}` | changes the queue capacity (up to `max_capacity`) |
//!
//! Pause, hold, drain rate and capacity are stored with the sale: with a shared store every
//! instance applies them (at its next stock sync; this one at once) and a restarted one
//! starts with them. The answer says so (`"scope": "fleet"`, or `"instance"` with the
//! memory store). Every change is logged with the peer, the value before and after.
//! | `PUT /admin/sales/{sku}/stock` `{"units": n}` | sets the stock in the store under a new epoch (releases a held sale) |
//! | `POST /admin/sales/{sku}/stock/add` `{"units": n}` | adds n units atomically (negative: takes them away), racing with no reservation |
//! | `POST /admin/orders/{order_id}/cancel` | an order the backend gave up after delivery: its units and its buyer's allowance back, once (see [`super::cancel`]) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::http::RequestBody;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::admin::sales;
use crate::cluster::membership::Membership;
use crate::error::GatewayError;
use crate::http::response::{json, GatewayResponse};
use crate::sale::book::{SaleBook, Setting};
use crate::sale::context::SaleContext;
use crate::sale::Sale;
use crate::store::{Cancellable, SaleControl, StoreError};
use crate::types::MAX_STOCK;

/// The admin API over a sale context.
pub struct AdminApi {
    ctx: Arc<SaleContext>,
    /// This instance among those sharing the store.
    membership: Arc<Membership>,
    /// `None` when no token is configured: the API is off.
    token: Option<Vec<u8>>,
    /// Command bodies must arrive within this time (`server.body_timeout`).
    body_timeout: std::time::Duration,
    /// Which orders a cancel may take back (by `delivery.mode`).
    cancellable: Cancellable,
    /// The book of sale definitions (`PUT`, `GET`, `DELETE /admin/sales/{sku}`).
    book: Arc<SaleBook>,
}

/// A switch's body: nothing, or `{}` (a command takes no fields it does not know).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rate {
    rate: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Capacity {
    capacity: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Units {
    units: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delta {
    units: i64,
}

impl AdminApi {
    /// The API over `ctx` and `membership`, accepting `token` (empty: off); command
    /// bodies must arrive within `body_timeout`; cancels take back `cancellable` orders;
    /// sales are defined in `book`.
    pub fn new(
        ctx: Arc<SaleContext>,
        membership: Arc<Membership>,
        token: &str,
        body_timeout: std::time::Duration,
        cancellable: Cancellable,
        book: Arc<SaleBook>,
    ) -> Self {
        Self {
            ctx,
            membership,
            token: (!token.is_empty()).then(|| token.as_bytes().to_vec()),
            body_timeout,
            cancellable,
            book,
        }
    }

    /// Answers a request under `/admin/` from `peer`.
    pub async fn handle(&self, req: Request<RequestBody>, peer: SocketAddr) -> GatewayResponse {
        match self.route(req, peer).await {
            Ok(r) => r,
            Err(GatewayError::Unauthorized) => {
                let mut r = GatewayError::Unauthorized.into_response();
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                r
            }
            Err(e) => e.into_response(),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return false;
        };
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        // Constant time, so the token cannot be guessed byte by byte from response times.
        given.ct_eq(expected).into()
    }

    /// Where a setting made here holds: every instance sharing the store, or this one.
    fn scope(&self) -> &'static str {
        if self.ctx.shared {
            "fleet"
        } else {
            "instance"
        }
    }

    /// Stores `control` for every instance first, then applies it here at once. If the
    /// store does not confirm it, nothing changes here and the operator gets 503; the
    /// write may still have landed (a reply lost to a timeout): the log says so, and the
    /// instances then apply it at their next sync. Setting it again is safe.
    async fn store_control(
        &self,
        peer: SocketAddr,
        sale: &Sale,
        control: SaleControl,
    ) -> Result<(), GatewayError> {
        self.ctx
            .store
            .set_control(&sale.sku, control)
            .await
            .map_err(|e| unconfirmed(peer, sale, &e, format_args!("{control:?}")))?;
        match control {
            SaleControl::Paused(p) => sale.set_paused(p),
            SaleControl::Draining(d) => sale.set_draining(d),
            SaleControl::Capacity(c) => sale.queue.set_capacity(c).map_err(|_| {
                GatewayError::BadRequest("capacity must be between 1 and max_capacity")
            })?,
        }
        Ok(())
    }

    /// The answer to a change: the sale's figures and where the change holds; the change
    /// is logged with who asked for it and the value before and after.
    fn changed(
        &self,
        peer: SocketAddr,
        action: &str,
        sale: &Sale,
        before: impl std::fmt::Display,
        after: impl std::fmt::Display,
    ) -> GatewayResponse {
        let scope = self.scope();
        tracing::info!(%peer, action, sku = %sale.sku, %before, %after, scope, "admin action");
        let mut v = view(sale);
        v["scope"] = json!(scope);
        json(StatusCode::OK, &v)
    }

    async fn route(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
    ) -> Result<GatewayResponse, GatewayError> {
        if !self.authorized(req.headers()) {
            return Err(GatewayError::Unauthorized);
        }
        let path = req.uri().path().to_owned();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method().clone(), parts.as_slice()) {
            (Method::GET, ["admin", "sales"]) => Ok(self.list()),
            (Method::GET, ["admin", "instances"]) => {
                let instances = self.membership.members().await.map_err(|e| {
                    tracing::warn!(error = %e, "cannot read the instances from the store");
                    GatewayError::StoreUnavailable
                })?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "self": self.membership.me(), "instances": instances }),
                ))
            }
            (
                Method::POST,
                ["admin", "sales", sku, action @ ("pause" | "resume" | "hold" | "release")],
            ) => {
                let control = match *action {
                    "pause" => SaleControl::Paused(true),
                    "resume" => SaleControl::Paused(false),
                    "hold" => SaleControl::Draining(false),
                    _ => SaleControl::Draining(true),
                };
                let sale = self.sale(sku)?.clone();
                read_switch(req, self.body_timeout).await?;
                let before = switch_word(&sale, control);
                self.store_control(peer, &sale, control).await?;
                let after = switch_word(&sale, control);
                Ok(self.changed(peer, action, &sale, before, after))
            }
            (Method::PUT, ["admin", "sales", sku, "drain_rate"]) => {
                self.set_drain_rate(req, peer, sku).await
            }
            (Method::PUT, ["admin", "sales", sku, "capacity"]) => {
                self.set_capacity(req, peer, sku).await
            }
            (Method::PUT, ["admin", "sales", sku, "stock"]) => self.set_stock(req, peer, sku).await,
            (Method::POST, ["admin", "sales", sku, "stock", "add"]) => {
                self.add_stock(req, peer, sku).await
            }
            (Method::GET, ["admin", "sales", sku]) => sales::get(&self.book, sku).await,
            (Method::PUT, ["admin", "sales", sku]) => {
                let given = sales::if_match(req.headers())?;
                let body = read_json(req, self.body_timeout).await?;
                sales::put(&self.book, peer, sku, given, body).await
            }
            (Method::DELETE, ["admin", "sales", sku]) => {
                let given = sales::if_match(req.headers())?;
                read_switch(req, self.body_timeout).await?;
                sales::delete(&self.book, peer, sku, given).await
            }
            (Method::POST, ["admin", "orders", id, "cancel"]) => {
                read_switch(req, self.body_timeout).await?;
                crate::admin::cancel::cancel(&self.ctx, self.cancellable, peer, id).await
            }
            (_, ["admin", "sales", ..] | ["admin", "orders", _, "cancel"]) => {
                Err(GatewayError::MethodNotAllowed)
            }
            _ => Err(GatewayError::NotFound),
        }
    }

    /// Sets a sale's drain rate for every instance (`PUT …/drain_rate`).
    async fn set_drain_rate(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
        sku: &str,
    ) -> Result<GatewayResponse, GatewayError> {
        let sale = self.sale(sku)?.clone();
        let Rate { rate } = read_json(req, self.body_timeout).await?;
        if rate == 0 {
            return Err(GatewayError::BadRequest("rate must be at least 1"));
        }
        // Stored first: the rate is every instance's, and they lease by it.
        self.ctx
            .store
            .set_drain_rate(&sale.sku, rate)
            .await
            .map_err(|e| unconfirmed(peer, &sale, &e, format_args!("drain_rate {rate}")))?;
        self.book.overridden(&sale.sku, Setting::DrainRate);
        let before = sale.drain_rate();
        sale.set_drain_rate(rate);
        Ok(self.changed(peer, "drain_rate", &sale, before, rate))
    }

    /// Sets a sale's queue capacity for every instance (`PUT …/capacity`).
    async fn set_capacity(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
        sku: &str,
    ) -> Result<GatewayResponse, GatewayError> {
        let sale = self.sale(sku)?.clone();
        let Capacity { capacity } = read_json(req, self.body_timeout).await?;
        // Checked before it is stored: every instance would refuse it too.
        if capacity == 0 || capacity > sale.queue.max_capacity() {
            return Err(GatewayError::BadRequest(
                "capacity must be between 1 and max_capacity",
            ));
        }
        let before = sale.queue.capacity();
        self.store_control(peer, &sale, SaleControl::Capacity(capacity))
            .await?;
        self.book.overridden(&sale.sku, Setting::Capacity);
        Ok(self.changed(peer, "capacity", &sale, before, capacity))
    }

    /// Replaces a sale's stock under a new epoch (`PUT …/stock`).
    async fn set_stock(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
        sku: &str,
    ) -> Result<GatewayResponse, GatewayError> {
        let sale = self.sale(sku)?.clone();
        let Units { units } = read_json(req, self.body_timeout).await?;
        if units > MAX_STOCK {
            return Err(GatewayError::BadRequest(
                "units must be at most 9007199254740991 (2^53 - 1)",
            ));
        }
        let epoch = self
            .ctx
            .store
            .set_stock(&sale.sku, units)
            .await
            .map_err(stock_error)?;
        let before = sale.remaining();
        self.ctx.adopt(&sale, units, &epoch);
        Ok(self.changed(peer, "stock", &sale, before, units))
    }

    /// Adds (or takes away) units of a sale's stock (`POST …/stock/add`).
    async fn add_stock(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
        sku: &str,
    ) -> Result<GatewayResponse, GatewayError> {
        let sale = self.sale(sku)?.clone();
        let Delta { units } = read_json(req, self.body_timeout).await?;
        let now = self
            .ctx
            .store
            .add_stock(&sale.sku, units)
            .await
            .map_err(stock_error)?;
        let before = sale.remaining();
        if !sale.is_held() {
            sale.set_remaining(now);
        }
        Ok(self.changed(peer, "stock_add", &sale, before, now))
    }

    fn sale(&self, sku: &str) -> Result<Arc<Sale>, GatewayError> {
        self.ctx.sale(sku)
    }

    fn list(&self) -> GatewayResponse {
        let mut sales: Vec<Value> = self
            .ctx
            .sales
            .all()
            .iter()
            .map(|s| {
                let mut v = view(s);
                if let Some(a) = self.book.applied(&s.sku) {
                    v["version"] = json!(a.version);
                    v["origin"] = json!(a.origin);
                }
                v
            })
            .collect();
        sales.sort_by(|a, b| a["sku"].as_str().cmp(&b["sku"].as_str()));
        json(StatusCode::OK, &json!({ "sales": sales }))
    }
}

/// The state a pause/resume or hold/release switch leaves, as the log words it.
fn switch_word(sale: &Sale, control: SaleControl) -> &'static str {
    match control {
        SaleControl::Paused(_) if sale.is_paused() => "paused",
        SaleControl::Paused(_) => "running",
        SaleControl::Draining(_) if sale.is_draining() => "draining",
        SaleControl::Draining(_) => "held",
        SaleControl::Capacity(_) => "sized",
    }
}

/// An admin change the store did not confirm: logged (its write may still land, and the
/// instances then apply it at their next sync), answered 503.
fn unconfirmed(
    peer: SocketAddr,
    sale: &Sale,
    error: &StoreError,
    change: std::fmt::Arguments<'_>,
) -> GatewayError {
    tracing::warn!(%peer, sku = %sale.sku, %error, %change,
        "admin action not confirmed by the store: it may still take effect; \
         check GET /admin/sales and send it again");
    GatewayError::StoreUnavailable
}

/// A sale's live figures.
fn view(s: &Sale) -> Value {
    json!({
        "sku": s.sku.as_str(),
        "state": s.state(SystemTime::now()),
        "remaining": s.remaining(),
        "queued": s.queue.len(),
        "pending": s.pending(),
        "pending_elsewhere": s.pending_elsewhere(),
        "capacity": s.queue.capacity(),
        "max_capacity": s.queue.max_capacity(),
        "drain_rate": s.drain_rate(),
        "drain_share": s.drain_share(),
        "outbox_lag_ms": s.outbox_lag().as_millis() as u64,
        "outbox_orders": s.outbox_orders(),
        // Why the rate is what it is: set, or steered within bounds by the outbox lag.
        "drain_auto": s.terms().settings.steered.map(|b| json!({
            "min": b.min,
            "max": b.max,
            "last": s.steered().name(),
        })),
        "paused": s.is_paused(),
        "draining": s.is_draining(),
        "held": s.is_held(),
    })
}

/// A store error on a stock change, as the admin API answers it.
fn stock_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::OutOfRange { .. } => {
            GatewayError::BadRequest("the stock would go below 0 or above 2^53 - 1")
        }
        StoreError::UnknownSale(_) => {
            GatewayError::BadRequest("the store holds no stock for this sale: set it first")
        }
        _ => GatewayError::StoreUnavailable,
    }
}

/// Reads a switch's body: empty, or `{}`; at most 4096 bytes like every command body.
async fn read_switch(
    req: Request<RequestBody>,
    timeout: std::time::Duration,
) -> Result<(), GatewayError> {
    let (parts, body) = req.into_parts();
    let body = crate::http::body::read(&parts.headers, body, 4096, timeout).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    // A JSON object with no fields: `[]` would deserialize into the empty struct too.
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    serde_json::from_slice::<NoFields>(&body)
        .ok()
        .filter(|_| object)
        .map(|_| ())
        .ok_or(GatewayError::BadRequest(
            "this command takes no body, or {}",
        ))
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<RequestBody>,
    timeout: std::time::Duration,
) -> Result<T, GatewayError> {
    let (parts, body) = req.into_parts();
    let body = crate::http::body::read(&parts.headers, body, 4096, timeout).await?;
    serde_json::from_slice(&body)
        .map_err(|_| GatewayError::BadRequest("the body is not the expected JSON"))
}
