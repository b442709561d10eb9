//! Wiring: binds the listeners, builds the request pipeline, and runs until shut down.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::config::{Config, StoreKind};
use crate::engine::Engine;
use crate::error::GatewayError;
use crate::local_state::{LocalState, LocalStateError};
use crate::metrics::{status_class_index, Metrics, STATUS_CLASSES};
use crate::proxy::Proxy;
use crate::response::GatewayResponse;
use crate::sale_api::{Route, SaleApi};
use crate::server::{self, Edge, Handler, Limits, Peer, TlsAcceptor, TlsError, TrustedProxies};
use crate::store::{Breaker, MemoryStore, RedisStore, Store, StoreError};
use prometheus::{Histogram, IntCounter};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The config key of the address.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A component could not be built from the config.
    #[error("{0}")]
    Setup(#[from] GatewayError),
    /// The store could not be reached to load stock.
    #[error("cannot load stock into the store: {0}")]
    Store(#[from] StoreError),
    /// A page template could not be loaded.
    #[error("{0}")]
    Pages(#[from] crate::pages::PagesError),
    /// The TLS certificate or key cannot serve.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The local state directory (`server.data_dir`) could not be read.
    #[error("server.data_dir: {0}")]
    LocalState(#[from] LocalStateError),
}

/// The public listener's pipeline.
#[derive(Clone)]
struct Public {
    inner: Arc<PublicInner>,
}

struct PublicInner {
    /// Whose `X-Forwarded-For` names the client.
    trusted: TrustedProxies,
    proxy: Proxy,
    sales: SaleApi,
    /// Requests answered by route (sale, proxy) and status class, resolved once.
    answered: [[IntCounter; 5]; 2],
    /// Proxied requests' time to the upstream's response head, by status class.
    upstream: [Histogram; 5],
}

impl Handler for Public {
    async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> GatewayResponse {
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
        if let Err(e) = crate::path::normalise_uri(req.uri_mut()) {
            let resp = GatewayError::from(e).into_closing_response();
            self.inner.answered[1][status_class_index(resp.status().as_u16())].inc();
            return resp;
        }
        let (route, resp) = if req.uri().path().starts_with("/sale/") {
            // A clone of the URI shares its bytes: the route borrows from it, not from `req`.
            let uri = req.uri().clone();
            match Route::of(uri.path()) {
                Some(route) => (0, self.inner.sales.handle(route, req, peer).await),
                None => (1, self.inner.proxy.forward(req, peer).await),
            }
        } else {
            (1, self.inner.proxy.forward(req, peer).await)
        };
        let class = status_class_index(resp.status().as_u16());
        self.inner.answered[route][class].inc();
        if route == 1 {
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

/// Loads stock until the store answers (every `every`), or until shutdown.
async fn load_when_up(
    engine: Arc<Engine>,
    config: Config,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        match engine.load_stock(&config).await {
            Ok(()) => {
                tracing::info!("the store answers; stock loaded");
                return;
            }
            Err(StoreError::Unavailable(_)) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot load stock");
                return;
            }
        }
    }
}

/// A running gateway: its bound addresses and the handle to stop it.
pub struct Gateway {
    /// Where the public listener is bound (the real port when `:0` was asked for).
    pub public_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    engine: Arc<Engine>,
    /// The memory store, when it is the store: what it still holds at the end of a
    /// graceful stop is written to the local state directory.
    memory: Option<Arc<MemoryStore>>,
    tls: Option<Arc<TlsAcceptor>>,
}

/// On each SIGHUP, reloads the TLS certificate and key; the process never stops on it.
async fn reload_on_hangup(tls: Option<Arc<TlsAcceptor>>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = crate::signal::hangup() => {}
            () = shutdown.cancelled() => return,
        }
        match &tls {
            Some(tls) => match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS reload failed; the certificate in use stays")
                }
            },
            None => tracing::info!(
                "SIGHUP: nothing to reload (configuration reload is not supported yet)"
            ),
        }
    }
}

impl Gateway {
    /// Binds both listeners and starts serving; call inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let bind = |key: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { key, addr, source })
        };
        let public = bind("server.listen", config.server.listen).await?;
        let admin = bind("server.admin_listen", config.server.admin_listen).await?;
        let public_addr = public.local_addr().map_err(|source| StartError::Bind {
            key: "server.listen",
            addr: config.server.listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            key: "server.admin_listen",
            addr: config.server.admin_listen,
            source,
        })?;

        // Orders reach the backend's intake through the deliverer only.
        let intake = (config.delivery.mode == crate::config::DeliveryMode::Http)
            .then_some(config.delivery.path.as_str());
        let proxy = Proxy::new(&config.upstream, &config.server)?
            .guarding_intake(intake)
            .keeping_identity(&config.identity.header);
        let pages = match config.pages.dir.as_str() {
            "" => crate::pages::Pages::builtin(),
            dir => crate::pages::Pages::load(std::path::Path::new(dir))?,
        };
        let limits = Limits::from_config(&config.server);
        // Validated with the config; were it not, trusting nobody is the safe reading.
        let trusted = TrustedProxies::parse(&config.server.trusted_proxies).unwrap_or_default();
        let tls = match &config.server.tls {
            Some(files) => Some(Arc::new(TlsAcceptor::load(
                std::path::Path::new(&files.cert),
                std::path::Path::new(&files.key),
            )?)),
            None => None,
        };
        let public_edge = Edge {
            tls: tls.clone(),
            proxy_protocol: config.server.proxy_protocol,
            trusted: trusted.clone(),
        };
        let admin_edge = Edge {
            trusted: trusted.clone(),
            ..Edge::default()
        };
        // The admin listener is for a handful of operators and probes, not the crowd.
        let admin_limits = Limits {
            max_connections: 64,
            ..limits
        };
        let shutdown = CancellationToken::new();
        let local = LocalState::open(config.data_dir())?;
        let mut memory = None;
        let mut restored = None;
        let backend: Arc<dyn Store> = match config.store.kind {
            StoreKind::Memory => {
                let m = Arc::new(MemoryStore::with_replay_ttl(config.store.replay_ttl));
                if let Some(path) = local.snapshot_path() {
                    if m.restore(&path)? {
                        tracing::info!(path = %path.display(), "restored the memory store kept by the last stop");
                        restored = Some(path);
                    }
                }
                memory = Some(m.clone());
                m
            }
            StoreKind::Redis => Arc::new(RedisStore::new(&config.store, config.store.replay_ttl)?),
        };
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = Arc::new(
            Breaker::new(
                backend,
                config.store.timeout,
                config.store.breaker_threshold,
                config.store.breaker_cooldown,
            )
            .with_metrics(metrics.clone()),
        );
        let engine = Arc::new(Engine::with_metrics(&config, store, metrics, local));
        // A store that does not answer yet does not keep the gateway from serving (the
        // proxy, the edge answers): stock is loaded in the background once it answers.
        let mut loading = None;
        match engine.load_stock(&config).await {
            Ok(()) => {}
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(%why, "the store does not answer; stock will be loaded when it does");
                loading = Some(tokio::spawn(load_when_up(
                    engine.clone(),
                    config.clone(),
                    config.store.breaker_cooldown,
                    shutdown.clone(),
                )));
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(path) = restored {
            // This process holds the state now; a crash from here on must be seen as lost
            // state (the sale held), never answered with the stale snapshot.
            std::fs::remove_file(&path).map_err(|source| LocalStateError {
                path: path.display().to_string(),
                source,
            })?;
        }
        let public_handler = Public {
            inner: Arc::new(PublicInner {
                trusted: trusted.clone(),
                proxy: proxy.clone(),
                sales: SaleApi::new(engine.clone(), pages, config.server.body_timeout),
                answered: ["sale", "proxy"].map(|route| {
                    STATUS_CLASSES.map(|c| engine.metrics.requests.with_label_values(&[route, c]))
                }),
                upstream: STATUS_CLASSES
                    .map(|c| engine.metrics.upstream_seconds.with_label_values(&[c])),
            }),
        };
        let admin_handler = Admin::new(
            proxy,
            config.upstream.connect_timeout,
            engine.store.clone(),
            crate::admin_api::AdminApi::new(
                engine.clone(),
                &config.admin.token,
                config.server.body_timeout,
            ),
        );
        let mut tasks = vec![
            tokio::spawn(server::serve(
                public,
                public_handler,
                limits,
                public_edge,
                server::ListenerMetrics::new(
                    &engine.metrics,
                    "public",
                    Some(engine.metrics.open_connections.clone()),
                ),
                shutdown.clone(),
            )),
            tokio::spawn(server::serve(
                admin,
                admin_handler,
                admin_limits,
                admin_edge,
                server::ListenerMetrics::new(&engine.metrics, "admin", None),
                shutdown.clone(),
            )),
        ];
        tasks.extend(engine.start(&config, shutdown.clone())?);
        tasks.extend(loading);
        tasks.push(tokio::spawn(reload_on_hangup(
            tls.clone(),
            shutdown.clone(),
        )));
        tracing::info!(%public_addr, %admin_addr, upstream = %config.upstream.url, "flashgate listening");
        Ok(Self {
            public_addr,
            admin_addr,
            shutdown,
            tasks,
            engine,
            memory,
            tls,
        })
    }

    /// Reads the TLS certificate and key again (what SIGHUP does); the ones in use stay
    /// on any error. Connections already open keep theirs.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// The sale engine: sales (pause, drain rate, drain hold), store, tickets.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Starts a graceful shutdown: stop accepting, let in-flight requests finish.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that starts the shutdown when cancelled (for signal handlers).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the listeners have shut down, their connections have drained, every
    /// admitted request has its outcome and the deliverer has stopped; then keeps what the
    /// memory store still holds (undelivered orders, stock, buyers) in the local state
    /// directory for the next start. An error means reserved orders would be lost.
    pub async fn wait(self) -> Result<(), LocalStateError> {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "listener task failed");
            }
        }
        match (&self.memory, self.engine.local.snapshot_path()) {
            (Some(m), Some(path)) => {
                let undelivered = m.save(&path)?;
                if undelivered > 0 {
                    tracing::warn!(undelivered, path = %path.display(),
                        "orders not delivered yet are kept for the next start");
                }
                Ok(())
            }
            (Some(m), None) => match m.undelivered() {
                0 => Ok(()),
                n => Err(LocalStateError {
                    path: "server.data_dir".to_owned(),
                    source: std::io::Error::other(format!(
                        "{n} reserved orders were not delivered and are lost: no data directory"
                    )),
                }),
            },
            _ => Ok(()),
        }
    }
}
