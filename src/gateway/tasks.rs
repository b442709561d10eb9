//! The gateway's background tasks: each sale's drain, the deliverer, stock sync with a
//! shared store, the steering of "auto" drain rates, the rate limiters' sweep, stock
//! loading once the store answers, and TLS reload on SIGHUP. Each stops on the shutdown token.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SaleConfig;
use crate::http::server::TlsAcceptor;
use crate::log_throttle::warn_repeated;
use crate::sale::book::SaleBook;
use crate::sale::context::SaleContext;
use crate::store::StoreError;

/// How often rate-limit keys whose buckets refilled are forgotten.
const LIMITER_SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Starts the drains, the deliverer (when given its settings), stock sync and the limiter
/// sweep over `ctx`.
pub(crate) fn start_sale_tasks(
    ctx: &Arc<SaleContext>,
    book: &Arc<SaleBook>,
    delivery: Option<crate::delivery::Settings>,
    max_lag: Duration,
    membership: &Arc<crate::cluster::membership::Membership>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    // Each sale's drain and opening run on the context's tracker, as those of sales
    // created later do: the gateway waits for them all at its stop.
    for sale in ctx.sales.all() {
        crate::sale::book::start_tasks(ctx, &sale, shutdown);
    }
    let mut tasks = Vec::new();
    let delivering = delivery.is_some();
    if let Some(settings) = delivery {
        tasks.push(tokio::spawn(crate::delivery::run(
            ctx.clone(),
            settings,
            membership.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(sync_stock(
        ctx.clone(),
        book.clone(),
        (ctx.stock_sync, delivering),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(sweep_limiters(ctx.clone(), shutdown.clone())));
    // The lag that steers an "auto" drain is read only where the gateway delivers.
    if delivering {
        tasks.push(tokio::spawn(steer_drains(
            ctx.clone(),
            membership.clone(),
            max_lag,
            shutdown.clone(),
        )));
    }
    tasks
}

/// Steers the "auto" drain rates once a second (see [`crate::sale::steer`]): with a shared
/// store only on the instance whose name sorts first among the live ones, so the fleet's
/// one rate moves once a second, not once per instance.
async fn steer_drains(
    ctx: Arc<SaleContext>,
    membership: Arc<crate::cluster::membership::Membership>,
    max_lag: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(crate::sale::steer::STEER_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = membership.me().consumer();
    let mut lags = std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let steers = !ctx.shared
            || membership
                .live_consumers()
                .is_some_and(|live| live.iter().min() == Some(&me));
        if steers {
            ctx.steer_drains(max_lag, &mut lags).await;
        }
    }
}

/// Reads each sale's stock back from the store every `every` (see [`SaleContext::stock_sync`]),
/// and, when this gateway delivers, each sale's outbox lag.
///
/// Polling rather than pub/sub: a few GETs a second per sale cost nothing, and a missed
/// message (a reconnect, a restart) cannot leave a flag wrong; the next read corrects it.
async fn sync_stock(
    ctx: Arc<SaleContext>,
    book: Arc<SaleBook>,
    (every, delivering): (Duration, bool),
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // New, changed and ended sales first: a sale created elsewhere sells here too.
        if let Err(e) = book.sync().await {
            warn_repeated!("cannot read the book of sales", error = %e);
        }
        ctx.sync_stock().await;
        if delivering {
            ctx.read_outbox_lags().await;
        }
    }
}

/// Forgets rate-limit keys whose buckets refilled, so the limiters' memory follows the
/// crowd's size now, not its peak.
async fn sweep_limiters(ctx: Arc<SaleContext>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(LIMITER_SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                ctx.per_user.sweep();
                ctx.per_ip.sweep();
                ctx.ticket_polls.sweep();
                ctx.relays_per_ip.sweep();
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Writes the counts of warnings that went quiet (see [`crate::log_throttle::flush`]).
pub(crate) async fn flush_repeated_warnings(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => crate::log_throttle::flush(false),
            () = shutdown.cancelled() => {
                crate::log_throttle::flush(true);
                return;
            }
        }
    }
}

/// Loads stock until the store answers (every `every`), or until shutdown.
pub(crate) async fn load_when_up(
    ctx: Arc<SaleContext>,
    book: Arc<SaleBook>,
    sales: Vec<SaleConfig>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        match ctx.load_stock(&sales).await {
            Ok(()) => {
                tracing::info!("the store answers; stock loaded");
                if let Err(e) = book.seed(&sales).await {
                    tracing::warn!(error = %e, "cannot write the file's sales to the store's book yet; trying at each sync");
                }
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

/// On each SIGHUP, reloads the config file (see [`super::reload`]), or without one the TLS
/// certificate and key alone; the process never stops on it.
pub(crate) async fn reload_on_hangup(
    reloader: Option<Arc<super::reload::Reloader>>,
    tls: Option<Arc<TlsAcceptor>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = crate::signal::hangup() => {}
            () = shutdown.cancelled() => return,
        }
        if let Some(reloader) = &reloader {
            // Logged and counted inside, applied or refused.
            let _ = reloader.reload().await;
            continue;
        }
        match &tls {
            Some(tls) => match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS reload failed; the certificate in use stays")
                }
            },
            None => tracing::info!("SIGHUP: nothing to reload (no config file, no TLS)"),
        }
    }
}

/// Once a stop is asked for (`stopping`), keeps serving for `grace` (readiness already
/// answers 503, so balancers stop sending), then starts the shutdown proper: listeners
/// close, in-flight and queued requests finish. A second stop request ends the grace early.
pub(crate) async fn stop_after_grace(
    stopping: CancellationToken,
    shutdown: CancellationToken,
    grace: Duration,
) {
    tokio::select! {
        () = stopping.cancelled() => {}
        () = shutdown.cancelled() => return,
    }
    if !grace.is_zero() {
        tracing::info!(grace = %humantime::format_duration(grace),
            "stopping: /readyz answers 503; still accepting during the grace so balancers notice \
             (a second SIGTERM or SIGINT stops at once)");
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            () = shutdown.cancelled() => {}
        }
    }
    tracing::info!("closing the listeners; draining in-flight requests");
    shutdown.cancel();
}
