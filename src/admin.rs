//! The admin listener: liveness and readiness for orchestrators and load balancers, and
//! the admin API under `/admin/` (see [`crate::admin_api`]).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::admin_api::AdminApi;
use crate::error::GatewayError;
use crate::proxy::Proxy;
use crate::response::{json, GatewayResponse};
use crate::server::{Handler, Peer};
use crate::store::Store;

/// Routes of the admin listener.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    proxy: Proxy,
    probe_timeout: Duration,
    store: Arc<dyn Store>,
    api: AdminApi,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    upstream: &'static str,
    store: &'static str,
    /// Sales held because the store lost their state: this instance still serves (the
    /// proxy, the other sales), so it stays ready, and says why those sales refuse.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    held: Vec<String>,
}

impl Admin {
    /// Admin routes checking the upstream behind `proxy` and the store; a probe gets
    /// `probe_timeout`.
    pub fn new(
        proxy: Proxy,
        probe_timeout: Duration,
        store: Arc<dyn Store>,
        api: AdminApi,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                proxy,
                probe_timeout,
                store,
                api,
            }),
        }
    }

    /// Ready when a TCP connection to the upstream opens and the store answers, each
    /// within the probe timeout.
    async fn readiness(&self) -> GatewayResponse {
        let store = tokio::time::timeout(self.inner.probe_timeout, self.inner.store.ping()).await;
        if !matches!(store, Ok(Ok(()))) {
            return GatewayError::NotReady("the store does not answer".to_owned()).into_response();
        }
        let target = self.inner.proxy.authority().as_str().to_owned();
        let upstream = match tokio::time::timeout(
            self.inner.probe_timeout,
            TcpStream::connect(target.as_str()),
        )
        .await
        {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("upstream {target} unreachable: {e}")),
            Err(_) => Some(format!(
                "upstream {target} did not accept a connection in time"
            )),
        };
        match upstream {
            None => json(
                StatusCode::OK,
                &Readiness {
                    ready: true,
                    upstream: "ok",
                    store: "ok",
                    held: self
                        .inner
                        .api
                        .held_sales()
                        .into_iter()
                        .map(|sku| {
                            format!(
                                "sale `{sku}`: the store lost its stock; load stock to sell again"
                            )
                        })
                        .collect(),
                },
            ),
            Some(reason) => GatewayError::NotReady(reason).into_response(),
        }
    }
}

impl Handler for Admin {
    async fn handle(&self, req: Request<Incoming>, _peer: &Peer) -> GatewayResponse {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => {
                json(StatusCode::OK, &Health { status: "ok" })
            }
            (&Method::GET | &Method::HEAD, "/readyz") => self.readiness().await,
            (&Method::GET, "/metrics") => self.inner.api.metrics(),
            (_, path) if path.starts_with("/admin/") => self.inner.api.handle(req).await,
            _ => GatewayError::NotFound.into_response(),
        }
    }
}
