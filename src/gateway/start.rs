//! Starting a built gateway: bind both listeners, bring the store up to date (stock,
//! operators' settings, the memory store's restored snapshot), wire the handlers, and
//! spawn the listeners and the background tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::public::PublicRouter;
use super::{tasks, Built, Gateway, StartError};
use crate::admin::api::AdminApi;
use crate::admin::Admin;
use crate::cluster::membership::Membership;
use crate::cluster::peers::Peers;
use crate::config::Config;
use crate::http::server::{self, ConnectionLimits, Edge, TlsAcceptor};
use crate::local_state::LocalStateError;
use crate::sale::book::SaleBook;
use arc_swap::ArcSwap;

use super::reload::Reloader;
use crate::sale::context::SaleContext;
use crate::sale_api::SaleApi;
use crate::store::StoreError;
use crate::trusted_proxies::TrustedProxies;

impl Built {
    /// Binds both listeners, loads stock (in the background while the store does not
    /// answer) and starts serving; call inside a tokio runtime.
    pub async fn start(self) -> Result<Gateway, StartError> {
        let Built {
            config,
            ctx,
            upstream,
            proxy,
            pages,
            trusted,
            tls,
            delivery,
            memory,
            restored,
            demo_identities,
            source,
        } = self;
        let [(public, public_addr), (admin, admin_addr)] = listeners(&config)?;
        let (shutdown, stopping) = (CancellationToken::new(), CancellationToken::new());
        let book = Arc::new(book_for(&ctx, &config, &shutdown));
        let pages = Arc::new(ArcSwap::from_pointee(pages));
        let reloader = source.map(|source| {
            let parts = (book.clone(), ctx.clone(), pages.clone(), tls.clone());
            Arc::new(Reloader::new(source, config.clone(), parts))
        });
        let loading = bring_store_up(&ctx, &book, &config, restored, &shutdown).await?;
        let membership = member(&ctx, &config, admin_addr);
        let instance_id = membership.me().id.clone();
        // A shared store means other instances: tickets and tokens may reach any of them.
        let peers = ctx
            .shared
            .then(|| Arc::new(Peers::new(membership.clone(), &ctx.tokens)));
        let router = PublicRouter::new(
            trusted.clone(),
            proxy,
            SaleApi::new(
                ctx.clone(),
                pages.clone(),
                config.server.body_timeout,
                peers,
            ),
            &ctx.metrics,
            demo_identities
                .then(|| crate::demo::identity::DemoIdentity::new(&config.identity.header))
                .flatten(),
        );
        let admin_handler = admin_routes(&config, &ctx, &membership, &book, upstream, &stopping);
        let limits = ConnectionLimits::from_config(&config.server);
        let (public_edge, admin_edge) = edges(&config, &tls, trusted);
        let mut tasks = vec![
            tokio::spawn(server::serve(
                public,
                router,
                limits,
                public_edge,
                server::ListenerMetrics::new(
                    &ctx.metrics,
                    "public",
                    Some(ctx.metrics.open_connections.clone()),
                ),
                shutdown.clone(),
            )),
            tokio::spawn(server::serve(
                admin,
                admin_handler,
                // For probes, operators and the other instances' relays, not the crowd.
                ConnectionLimits {
                    max_connections: config.admin.max_connections,
                    max_connections_per_ip: config.admin.max_connections_per_ip,
                    ..limits
                },
                admin_edge,
                server::ListenerMetrics::new(&ctx.metrics, "admin", None),
                shutdown.clone(),
            )),
        ];
        tasks.extend(background(
            &ctx,
            &book,
            reloader,
            &config,
            delivery,
            &membership,
            loading,
            &tls,
            &stopping,
            &shutdown,
        ));
        tracing::info!(%public_addr, %admin_addr, upstream = %config.upstream.url,
            version = crate::version::VERSION, commit = crate::version::COMMIT, instance = %instance_id, "flashgate listening");
        Ok(Gateway {
            public_addr,
            admin_addr,
            stopping,
            shutdown,
            tasks,
            ctx,
            memory,
            tls,
        })
    }
}

/// The admin listener's routes: probes, metrics, the admin API.
fn admin_routes(
    config: &Config,
    ctx: &Arc<SaleContext>,
    membership: &Arc<Membership>,
    book: &Arc<SaleBook>,
    upstream: crate::http::UpstreamTarget,
    stopping: &CancellationToken,
) -> Admin {
    Admin::new(
        upstream.authority,
        config.upstream.connect_timeout,
        stopping.clone(),
        ctx.clone(),
        AdminApi::new(
            ctx.clone(),
            membership.clone(),
            &config.admin.token,
            config.server.body_timeout,
            crate::store::Cancellable::under(config.delivery.mode),
            book.clone(),
        ),
    )
}

/// Both listeners, public then admin, under the open-files limit raised as far as it goes.
fn listeners(config: &Config) -> Result<[(TcpListener, SocketAddr); 2], StartError> {
    open_files(config);
    let backlog = crate::http::listen::backlog(config.server.backlog);
    let public = bind("server.listen", config.server.listen, backlog)?;
    let admin = bind("server.admin_listen", config.server.admin_listen, backlog)?;
    tracing::info!(
        backlog,
        somaxconn = crate::system_limits::somaxconn(),
        "listening with this accept queue (server.backlog)"
    );
    Ok([public, admin])
}

/// Raises the open-files limit to the hard one (as nginx's `worker_rlimit_nofile`), logs
/// it, and warns when the connections the config allows cannot all be open under it.
fn open_files(config: &Config) {
    let before = crate::system_limits::open_files();
    match crate::system_limits::raise_open_files() {
        Ok(now) => {
            tracing::info!(
                soft = now.soft,
                hard = now.hard,
                was = before.map_or(0, |b| b.soft),
                "open-files limit (RLIMIT_NOFILE)"
            );
            if let Some(w) = config.open_files_warning(now.soft) {
                tracing::warn!("{w}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

/// Binds the listener for config key `key` with `backlog`; the address it got (the real
/// port for `:0`).
fn bind(
    key: &'static str,
    addr: SocketAddr,
    backlog: u32,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = crate::http::listen::bind(addr, backlog).map_err(|source| StartError::Bind {
        key,
        addr,
        source,
    })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { key, addr, source })?;
    Ok((listener, bound))
}

/// Loads stock and the operators' settings the fleet stored, and lets go of the memory
/// store's snapshot once restored. A store that does not answer yet does not keep the
/// gateway from serving (the proxy, the edge answers): the task that loads stock once it
/// answers is returned.
async fn bring_store_up(
    ctx: &Arc<SaleContext>,
    book: &Arc<SaleBook>,
    config: &Config,
    restored: Option<PathBuf>,
    shutdown: &CancellationToken,
) -> Result<Option<JoinHandle<()>>, StartError> {
    if let Some(path) = &restored {
        tracing::info!(path = %path.display(), "restored the memory store kept by the last stop");
    }
    let mut loading = None;
    match ctx.load_stock(&config.sales).await {
        Ok(()) => {
            // Then the book: the file's sales written once, sales created elsewhere run here.
            if let Err(e) = book.seed(&config.sales).await {
                tracing::warn!(error = %e, "cannot write the file's sales to the store's book yet; trying at each sync");
            }
        }
        Err(StoreError::Unavailable(why)) => {
            tracing::warn!(%why, "the store does not answer; stock will be loaded when it does");
            loading = Some(tokio::spawn(tasks::load_when_up(
                ctx.clone(),
                book.clone(),
                config.sales.clone(),
                config.store.breaker_cooldown,
                shutdown.clone(),
            )));
        }
        Err(e) => return Err(e.into()),
    }
    // Operators' settings stored by the fleet (a pause, a hold) hold from the first
    // request on, not from the first stock sync.
    for sale in &ctx.sales.all() {
        ctx.sync_controls(sale).await;
    }
    if let Some(path) = restored {
        // This process holds the state now; a crash from here on must be seen as lost
        // state (the sale held), never answered with the stale snapshot.
        std::fs::remove_file(&path).map_err(|source| LocalStateError {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(loading)
}

/// This instance as a member of the fleet sharing the store, announced by the admin
/// listener's address; its id goes into `flashgate_build_info`.
fn member(ctx: &SaleContext, config: &Config, admin_addr: SocketAddr) -> Arc<Membership> {
    let membership = Arc::new(Membership::new(
        &config.cluster,
        admin_addr,
        ctx.owner,
        ctx.store.clone(),
        ctx.metrics.clone(),
    ));
    ctx.metrics.set_build_info(&membership.me().id);
    membership
}

/// The public listener's edge (TLS, PROXY protocol) and the admin listener's.
fn edges(config: &Config, tls: &Option<Arc<TlsAcceptor>>, trusted: TrustedProxies) -> (Edge, Edge) {
    let public = Edge {
        tls: tls.clone(),
        proxy_protocol: config.server.proxy_protocol,
        trusted: trusted.clone(),
        access_log: config.log.access.then_some("public"),
    };
    let admin = Edge {
        trusted,
        access_log: config.log.access.then_some("admin"),
        ..Edge::default()
    };
    (public, admin)
}

/// The book of sales this instance runs; in stream mode it refuses "auto" drain rates
/// (nothing here delivers, so nothing can steer them).
fn book_for(ctx: &Arc<SaleContext>, config: &Config, shutdown: &CancellationToken) -> SaleBook {
    let book = SaleBook::new(ctx.clone(), &config.queue, shutdown.clone());
    match config.delivery.mode {
        crate::config::DeliveryMode::Stream => book.without_steering(),
        crate::config::DeliveryMode::Http => book,
    }
}

/// Spawns the background tasks: each sale's drain, the deliverer and stock sync, the
/// membership heartbeat, the stock loader (if the store was down), the flush of repeated
/// warnings, the end of the stop's grace, and TLS reload on SIGHUP.
#[allow(clippy::too_many_arguments)]
fn background(
    ctx: &Arc<SaleContext>,
    book: &Arc<SaleBook>,
    reloader: Option<Arc<Reloader>>,
    config: &Config,
    delivery: Option<crate::delivery::Settings>,
    membership: &Arc<Membership>,
    loading: Option<JoinHandle<()>>,
    tls: &Option<Arc<TlsAcceptor>>,
    stopping: &CancellationToken,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let max_lag = config.delivery.max_lag;
    tasks.extend(tasks::start_sale_tasks(
        ctx, book, delivery, max_lag, membership, shutdown,
    ));
    tasks.push(tokio::spawn(membership.clone().run(shutdown.clone())));
    tasks.extend(loading);
    tasks.push(tokio::spawn(tasks::flush_repeated_warnings(
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(tasks::stop_after_grace(
        stopping.clone(),
        shutdown.clone(),
        config.server.shutdown_grace,
    )));
    tasks.push(tokio::spawn(tasks::reload_on_hangup(
        reloader,
        tls.clone(),
        shutdown.clone(),
    )));
    tasks
}
