//! The public listener's router: the client's address behind trusted balancers, one
//! normalised path, then a sale route or the proxy; each answer counted by route and class.

use std::sync::Arc;
use std::time::Instant;

use crate::http::RequestBody;
use http::Request;
use prometheus::{Histogram, IntCounter};

use crate::demo::identity::DemoIdentity;
use crate::error::{GatewayError, GATEWAY_5XX};
use crate::http::response::GatewayResponse;
use crate::http::server::{Handler, Peer};
use crate::metrics::{status_class_index, Metrics, STATUS_CLASSES};
use crate::proxy::Proxy;
use crate::sale_api::{Route, SaleApi};
use crate::trusted_proxies::TrustedProxies;

/// Routes each public request to the sale API or the proxy.
#[derive(Clone)]
pub(crate) struct PublicRouter {
    inner: Arc<Routes>,
}

struct Routes {
    /// Whose `X-Forwarded-For` names the client.
    trusted: TrustedProxies,
    proxy: Proxy,
    sales: SaleApi,
    /// Requests answered by route (sale, proxy) and status class, resolved once.
    answered: [[IntCounter; 5]; 2],
    /// 5xx answers by route and exact status (looked up on the error path only).
    server_errors: prometheus::IntCounterVec,
    /// Proxied requests' time to the upstream's response head, by status class.
    upstream: [Histogram; 5],
    /// `flashgate demo` only: identities for browsers that send none.
    demo: Option<DemoIdentity>,
}

/// Index of the sale route in `answered`.
const SALE: usize = 0;
/// Index of the proxy route in `answered`.
const PROXY: usize = 1;
/// The `route` label of each index.
const ROUTES: [&str; 2] = ["sale", "proxy"];

impl PublicRouter {
    /// The router over `sales` and `proxy`, counting into `metrics`.
    pub(crate) fn new(
        trusted: TrustedProxies,
        proxy: Proxy,
        sales: SaleApi,
        metrics: &Metrics,
        demo: Option<DemoIdentity>,
    ) -> Self {
        // The gateway's own 5xx answers are counted from 0, not from the first one.
        for route in ROUTES {
            for status in GATEWAY_5XX {
                metrics
                    .server_errors
                    .with_label_values(&[route, status.as_str()]);
            }
        }
        Self {
            inner: Arc::new(Routes {
                trusted,
                proxy,
                sales,
                server_errors: metrics.server_errors.clone(),
                answered: ROUTES.map(|route| {
                    STATUS_CLASSES.map(|c| metrics.requests.with_label_values(&[route, c]))
                }),
                upstream: STATUS_CLASSES.map(|c| metrics.upstream_seconds.with_label_values(&[c])),
                demo,
            }),
        }
    }
}

impl Handler for PublicRouter {
    async fn handle(&self, req: Request<RequestBody>, peer: &Peer) -> GatewayResponse {
        // Cloning method and URI costs a little; only pay it when the line is logged.
        let logged = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (req.method().clone(), req.uri().clone(), Instant::now()));
        let started = Instant::now();
        let mut req = req;
        // Behind a trusted balancer the client is the one its X-Forwarded-For names: per-IP
        // limits, logs and the upstream's headers all see that address.
        let behind;
        let peer = match self.inner.trusted.client(peer.addr.ip(), req.headers()) {
            Some(client) => {
                behind = peer.behind(client);
                &behind
            }
            None => peer,
        };
        // Every decision below, and the upstream, reads one normalised path.
        let normalised = crate::path::check_form(req.method(), req.uri())
            .and_then(|()| crate::path::normalise_uri(req.uri_mut()));
        if let Err(e) = normalised {
            let resp = GatewayError::from(e).into_closing_response();
            self.inner.answered[PROXY][status_class_index(resp.status().as_u16())].inc();
            return resp;
        }
        let demo_cookie = self
            .inner
            .demo
            .as_ref()
            .and_then(|d| d.apply(req.headers_mut()));
        let (route, mut resp) = if req.uri().path().starts_with("/sale/") {
            // A clone of the URI shares its bytes: the route borrows from it, not from `req`.
            let uri = req.uri().clone();
            match Route::of(uri.path()) {
                Some(route) => (SALE, self.inner.sales.handle(route, req, peer).await),
                None => (PROXY, self.inner.proxy.forward(req, peer).await),
            }
        } else {
            (PROXY, self.inner.proxy.forward(req, peer).await)
        };
        if let Some(cookie) = demo_cookie {
            DemoIdentity::set_cookie(resp.headers_mut(), cookie);
        }
        let class = status_class_index(resp.status().as_u16());
        self.inner.answered[route][class].inc();
        if resp.status().is_server_error() {
            self.inner
                .server_errors
                .with_label_values(&[ROUTES[route], resp.status().as_str()])
                .inc();
        }
        if route == PROXY {
            self.inner.upstream[class].observe(started.elapsed().as_secs_f64());
        }
        if let Some((method, uri, start)) = logged {
            tracing::debug!(
                peer = %peer.addr, %method, path = uri.path(), status = resp.status().as_u16(),
                elapsed_us = start.elapsed().as_micros() as u64, "request"
            );
        }
        resp
    }
}
