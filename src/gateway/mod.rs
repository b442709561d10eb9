//! The composition root: builds every component from the config once ([`Gateway::build`],
//! no sockets, what `check-config` runs), then binds the listeners and starts the
//! background tasks ([`Built::start`]), and runs until shut down.

mod public;
pub mod reload;
mod start;
pub mod store;
mod tasks;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeliveryMode};
use crate::error::GatewayError;
use crate::http::server::{TlsAcceptor, TlsError};
use crate::http::UpstreamTarget;
use crate::local_state::{LocalState, LocalStateError};
use crate::metrics::Metrics;
use crate::pages::Pages;
use crate::proxy::Proxy;
use crate::sale::context::{ContextParts, SaleContext};
use crate::sale::Sales;
use crate::store::{MemoryStore, StoreError};
use crate::trusted_proxies::TrustedProxies;

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

impl StartError {
    /// True when the configuration itself cannot serve (a template, a TLS file, the
    /// upstream URL): exit code 2, as for a refused config; false for what the machine
    /// refused (an address in use, the store, the data directory).
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::Setup(_) | Self::Pages(_) | Self::Tls(_) => true,
            Self::Bind { .. } | Self::Store(_) | Self::LocalState(_) => false,
        }
    }
}

/// Every component built from the config, nothing bound or started yet.
pub struct Built {
    config: Config,
    ctx: Arc<SaleContext>,
    upstream: UpstreamTarget,
    proxy: Proxy,
    pages: Pages,
    trusted: TrustedProxies,
    tls: Option<Arc<TlsAcceptor>>,
    /// The deliverer's settings, when the gateway delivers (`delivery.mode = "http"`).
    delivery: Option<crate::delivery::Settings>,
    memory: Option<Arc<MemoryStore>>,
    restored: Option<PathBuf>,
    /// `flashgate demo` only (never a config key): identities for browsers without one.
    demo_identities: bool,
    /// Where the config is read again on SIGHUP (`serve`); without one, SIGHUP reloads
    /// only the TLS certificate and key.
    source: Option<reload::ConfigSource>,
}

/// Asks a running gateway to stop gracefully (see [`Gateway::stop`]); cheap to clone,
/// for signal handlers.
#[derive(Clone)]
pub struct Stopper {
    stopping: CancellationToken,
    shutdown: CancellationToken,
}

impl Stopper {
    /// The first call begins the graceful stop: readiness answers 503 at once, the
    /// listeners keep accepting for `server.shutdown_grace`, then close and drain. A
    /// second call ends the grace at once.
    pub fn stop(&self) {
        if self.stopping.is_cancelled() {
            self.shutdown.cancel();
        } else {
            self.stopping.cancel();
        }
    }
}

/// A running gateway: its bound addresses and the handle to stop it.
pub struct Gateway {
    /// Where the public listener is bound (the real port when `:0` was asked for).
    pub public_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// Cancelled when a graceful stop begins: readiness turns 503.
    stopping: CancellationToken,
    /// Cancelled when the listeners close (after the grace).
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    ctx: Arc<SaleContext>,
    /// The memory store, when it is the store: what it still holds at the end of a
    /// graceful stop is written to the local state directory.
    memory: Option<Arc<MemoryStore>>,
    tls: Option<Arc<TlsAcceptor>>,
}

impl Gateway {
    /// Builds every component from `config` without binding a socket or contacting
    /// anything: what `check-config` runs, so that it refuses what `serve` would.
    pub fn build(config: Config) -> Result<Built, StartError> {
        let upstream = UpstreamTarget::parse(&config.upstream.url)?;
        // Orders reach the backend's intake through the deliverer only.
        let intake =
            (config.delivery.mode == DeliveryMode::Http).then_some(config.delivery.path.as_str());
        let proxy = Proxy::new(&upstream, &config.upstream, &config.server)
            .guarding_intake(intake)
            .keeping_identity(&config.identity.header);
        let pages = match config.pages.dir.as_str() {
            "" => Pages::builtin(),
            dir => Pages::load(std::path::Path::new(dir))?,
        };
        // Validated with the config; were it not, trusting nobody is the safe reading.
        let trusted = TrustedProxies::parse(&config.server.trusted_proxies).unwrap_or_default();
        let tls = match &config.server.tls {
            Some(files) => Some(Arc::new(TlsAcceptor::load(
                std::path::Path::new(&files.cert),
                std::path::Path::new(&files.key),
            )?)),
            None => None,
        };
        let local = LocalState::open(config.data_dir())?;
        let metrics = Arc::new(Metrics::new());
        let opened = store::open(&config.store, &local, Some(metrics.clone()))?;
        // Without a configured secret (the memory store: one process) the store's own key
        // signs tokens, so that they hold across a graceful restart as its state does.
        let token_secret = match (&opened.memory, config.cluster.secret.as_str()) {
            (Some(memory), "") => memory.token_secret(),
            (_, secret) => secret.to_owned(),
        };
        let ctx = Arc::new(SaleContext::new(ContextParts {
            sales: Sales::new(&config.sales, &config.queue, &metrics),
            store: opened.store,
            metrics,
            local,
            queue: &config.queue,
            identity: &config.identity,
            limits: &config.limits,
            store_config: &config.store,
            token_secret: &token_secret,
        }));
        // In stream mode the backend consumes the outbox itself; the gateway only reserves.
        let delivery = (config.delivery.mode == DeliveryMode::Http).then(|| {
            crate::delivery::Settings::new(
                &config.delivery,
                &config.upstream,
                &upstream,
                config.server.shutdown_timeout,
            )
        });
        Ok(Built {
            ctx,
            upstream,
            proxy,
            pages,
            trusted,
            tls,
            delivery,
            memory: opened.memory,
            restored: opened.restored,
            demo_identities: false,
            source: None,
            config,
        })
    }

    /// Builds the gateway from `config` and starts it; call inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::build(config)?.start().await
    }

    /// Reads the TLS certificate and key again (what SIGHUP does); the ones in use stay
    /// on any error. Connections already open keep theirs.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }
}

impl Built {
    /// `flashgate demo` only: a request without the identity header gets a random demo
    /// identity in a cookie (see [`crate::demo::identity`]).
    pub fn with_demo_identities(mut self) -> Self {
        self.demo_identities = true;
        self
    }

    /// Reads the config again from `source` on each SIGHUP and applies what can change
    /// live (see [`reload`]).
    pub fn reloading_from(mut self, source: reload::ConfigSource) -> Self {
        self.source = Some(source);
        self
    }

    /// The sale context it built.
    pub fn context(&self) -> &Arc<SaleContext> {
        &self.ctx
    }
}

impl Gateway {
    /// The sale context: sales (pause, drain rate, drain hold), store, tickets.
    pub fn context(&self) -> &Arc<SaleContext> {
        &self.ctx
    }

    /// Shuts down now, without the grace: stop accepting, let in-flight requests finish.
    pub fn shutdown(&self) {
        self.stopping.cancel();
        self.shutdown.cancel();
    }

    /// Stops as SIGTERM does: readiness 503 at once, the grace, then the shutdown.
    pub fn stop(&self) {
        self.stopper().stop();
    }

    /// A handle that stops the gateway as [`stop`](Self::stop) does (for signal handlers).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stopping: self.stopping.clone(),
            shutdown: self.shutdown.clone(),
        }
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
        // Every sale's drain and opening, those of sales created while it ran included.
        self.ctx.sale_tasks.close();
        self.ctx.sale_tasks.wait().await;
        match (&self.memory, self.ctx.local.snapshot_path()) {
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
