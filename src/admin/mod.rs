//! The admin listener: liveness and readiness for orchestrators and load balancers, the
//! Prometheus scrape at `/metrics` (no token: it holds no user data), and the admin API
//! under `/admin/` (see [`api`]). With a shared store, the other instances
//! ask it about its tickets at `/internal/tickets/{id}` (see [`crate::cluster::peers`]).

pub(crate) mod api;
pub(crate) mod cancel;
pub(crate) mod sales;

use std::sync::Arc;
use std::time::Duration;

use crate::http::RequestBody;
use http::{Method, Request, StatusCode};
use serde::Serialize;
use tokio::net::TcpStream;

use http::uri::Authority;

use self::api::AdminApi;
use crate::cluster::peers::Peers;
use crate::error::GatewayError;
use crate::http::response::{json, GatewayResponse};
use crate::http::server::{Handler, Peer};
use crate::sale::context::SaleContext;
use crate::sale::lookup::known_ticket;
use crate::sale_api::ticket_view;
use crate::store::StoreError;
use crate::types::TicketId;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// The longest a readiness probe waits for the store or the upstream.
pub const PROBE_TIMEOUT_CAP: Duration = Duration::from_millis(800);

/// Routes of the admin listener.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    /// The upstream's `host:port`, which readiness connects to.
    upstream: Authority,
    probe_timeout: Duration,
    /// Cancelled once a graceful stop has begun: readiness answers 503 from then on.
    stopping: CancellationToken,
    ctx: Arc<SaleContext>,
    api: AdminApi,
    /// What the other instances' calls carry (`None`: no shared store, no such calls).
    peer_credential: Option<String>,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// What readiness reports. Every instance shares the store and the backend: were their
/// troubles to make it unready, every instance would go unready at once and even the
/// proxy would stop. They are reported here (and in metrics and alerts) instead.
#[derive(Serialize)]
struct Readiness {
    ready: bool,
    /// `ok`, or `unreachable` when no TCP connection to the upstream opens in time.
    upstream: &'static str,
    /// Why the upstream is `unreachable`.
    upstream_error: Option<String>,
    /// `ok`; `partial` when some sales' store (a Redis Cluster master) does not answer;
    /// `unavailable` when it answers for none.
    store: &'static str,
    /// Sales whose store does not answer: they refuse with 503 `store_unavailable`, the
    /// others sell.
    unavailable_sales: Vec<String>,
    /// Sales held because the store lost their state (load stock to sell again): this
    /// instance still serves (the proxy, the other sales), so it stays ready, and names
    /// the sales that refuse.
    held: Vec<String>,
}

impl Admin {
    /// Admin routes checking `upstream` and the sale context's store (each probe gets
    /// `probe_timeout`, at most [`PROBE_TIMEOUT_CAP`]), ready until `stopping`, exposing the sale context's metrics, and `api` under `/admin/`.
    pub fn new(
        upstream: Authority,
        probe_timeout: Duration,
        stopping: CancellationToken,
        ctx: Arc<SaleContext>,
        api: AdminApi,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                // A probe must answer within an orchestrator's own timeout (Kubernetes'
                // default is one second), whatever the dependencies do.
                probe_timeout: probe_timeout.min(PROBE_TIMEOUT_CAP),
                stopping,
                peer_credential: ctx.shared.then(|| Peers::credential(&ctx.tokens)),
                ctx,
                api,
            }),
        }
    }

    /// `GET /metrics`: the Prometheus text exposition, gauges read from live state first.
    fn metrics(&self) -> GatewayResponse {
        let ctx = &self.inner.ctx;
        ctx.refresh_gauges();
        let mut r = GatewayResponse::new(http_body_util::Either::Right(http_body_util::Full::new(
            bytes::Bytes::from(ctx.metrics.render()),
        )));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        r
    }

    /// Another instance asks about a ticket of this one (a poll that reached it): the
    /// answer this instance would give, from its own book only (never asked onwards).
    async fn peer_ticket(&self, req: &Request<RequestBody>, id: &str) -> GatewayResponse {
        let Some(expected) = &self.inner.peer_credential else {
            return GatewayError::NotFound.into_response();
        };
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map_or(&b""[..], |v| v.as_bytes());
        if !bool::from(given.ct_eq(expected.as_bytes())) {
            return GatewayError::Unauthorized.into_response();
        }
        let ctx = &self.inner.ctx;
        let Some(id) = TicketId::parse(id) else {
            return GatewayError::UnknownTicket.into_response();
        };
        // Read before the book (a request enters the book before it stops arriving): one
        // on its way into the queue, its token held but its place not taken yet, is not
        // gone, only not answerable yet; taken for gone, its hold would be let go.
        let arriving = ctx.tickets.is_arriving(&id);
        match known_ticket(ctx, id).await {
            Some(ticket) => ticket_view(ctx, id, &ticket),
            None if arriving => GatewayError::TicketUnavailable.into_response(),
            None => GatewayError::UnknownTicket.into_response(),
        }
    }

    /// The skus of sales held because the store lost their state, sorted.
    fn held_sales(&self) -> Vec<String> {
        let mut held: Vec<String> = self
            .inner
            .ctx
            .sales
            .all()
            .iter()
            .filter(|s| s.is_held())
            .map(|s| s.sku.to_string())
            .collect();
        held.sort();
        held
    }

    /// The sales whose store does not answer (each asked for its stock, through its
    /// breaker), sorted; `None` when the store answers for none of them.
    async fn unavailable_sales(&self) -> Option<Vec<String>> {
        let ctx = &self.inner.ctx;
        let sales = ctx.sales.all();
        if sales.is_empty() {
            let pinged = tokio::time::timeout(self.inner.probe_timeout, ctx.store.ping()).await;
            return matches!(pinged, Ok(Ok(()))).then(Vec::new);
        }
        // Asked together: a dead master costs one probe timeout, not one a sale.
        let mut asks = tokio::task::JoinSet::new();
        for sale in &sales {
            let (ctx, sku, timeout) = (ctx.clone(), sale.sku.clone(), self.inner.probe_timeout);
            asks.spawn(async move {
                match tokio::time::timeout(timeout, ctx.store.stock(&sku)).await {
                    // "No such sale" is an answer: the store is up.
                    Ok(Ok(_) | Err(StoreError::UnknownSale(_) | StoreError::Rejected(_))) => None,
                    _ => Some(sku.to_string()),
                }
            });
        }
        let mut down: Vec<String> = asks.join_all().await.into_iter().flatten().collect();
        if down.len() == sales.len() {
            return None;
        }
        down.sort();
        Some(down)
    }

    /// Opens (and drops) a TCP connection to the upstream: `None` when it opens in time.
    async fn upstream_trouble(&self) -> Option<String> {
        let target = self.inner.upstream.as_str();
        match tokio::time::timeout(self.inner.probe_timeout, TcpStream::connect(target)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("{target}: {e}")),
            Err(_) => Some(format!("{target}: no connection within the probe timeout")),
        }
    }

    /// Ready while this instance serves and no stop has begun; the store's and the
    /// upstream's state (probed together, each within the probe timeout) is reported in
    /// the body, not by going unready.
    async fn readiness(&self) -> GatewayResponse {
        if self.inner.stopping.is_cancelled() {
            return GatewayError::NotReady("shutting down".to_owned()).into_response();
        }
        let (unavailable, upstream_error) =
            tokio::join!(self.unavailable_sales(), self.upstream_trouble());
        let (store, unavailable_sales) = match unavailable {
            Some(down) if down.is_empty() => ("ok", down),
            Some(down) => ("partial", down),
            None => {
                let mut all: Vec<String> = self
                    .inner
                    .ctx
                    .sales
                    .all()
                    .iter()
                    .map(|s| s.sku.to_string())
                    .collect();
                all.sort();
                ("unavailable", all)
            }
        };
        json(
            StatusCode::OK,
            &Readiness {
                ready: true,
                upstream: if upstream_error.is_none() {
                    "ok"
                } else {
                    "unreachable"
                },
                upstream_error,
                store,
                unavailable_sales,
                held: self.held_sales(),
            },
        )
    }
}

impl Handler for Admin {
    async fn handle(&self, req: Request<RequestBody>, peer: &Peer) -> GatewayResponse {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => {
                json(StatusCode::OK, &Health { status: "ok" })
            }
            (&Method::GET | &Method::HEAD, "/readyz") => self.readiness().await,
            (&Method::GET, "/metrics") => self.metrics(),
            (_, path) if path.starts_with("/admin/") => self.inner.api.handle(req, peer.addr).await,
            (&Method::GET, path) if path.starts_with("/internal/tickets/") => {
                self.peer_ticket(&req, &path["/internal/tickets/".len()..])
                    .await
            }
            _ => GatewayError::NotFound.into_response(),
        }
    }
}
