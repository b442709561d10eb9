//! Drain and order workers: per sale, queued requests are released at the sale's drain
//! rate to at most `workers` concurrent store steps, in admission order. The rate is one
//! budget for every instance sharing the store: the drain leases permits from it (see
//! [`crate::store::lease`]) only while it has requests queued, so the rate goes where the
//! queue is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::context::SaleContext;
use super::outcome::Outcome;
use super::queue::{Head, QueueItem};
use super::ticket::TicketStatus;
use super::Sale;
use crate::log_throttle::warn_repeated;
use crate::store::lease::{lease_size, LEASE_PERIOD};
use crate::store::{Reservation, ReserveRequest};
use crate::types::{TicketId, Token, UserId};

/// The longest a stopping drain waits for an admission to fill its slot in.
const FILLING_WAIT: Duration = Duration::from_millis(100);

/// How long a share of the rate is measured over before it is reported.
const SHARE_WINDOW: Duration = Duration::from_secs(1);

/// What releases queued requests: with a shared store, the fleet's line cursor (see
/// [`crate::store::line`]); else (and while the store cannot be asked) permits leased from
/// the store, at most one lease a period.
struct Pacer {
    /// In the fleet's line: a request goes once the cursor has passed its number.
    in_line: bool,
    /// The line's cursor as last asked.
    cursor: u64,
    /// Requests released since the cursor was last asked (for the share measured).
    released: u32,
    /// Permits in hand (the sold-out fast path, or a store that cannot be asked).
    credit: u32,
    /// No lease before this.
    next_lease: Instant,
    /// Since when the queue has been busy, and what was granted since.
    window: Option<(Instant, u64)>,
    /// The last lease got less than it asked: other instances draw on the budget too.
    contended: bool,
}

impl Pacer {
    fn new(in_line: bool) -> Self {
        Self {
            in_line,
            cursor: 0,
            released: 0,
            credit: 0,
            next_lease: Instant::now(),
            window: None,
            contended: false,
        }
    }

    /// Asks the store for permits for what is queued. When the store cannot be asked, a
    /// period's worth of this instance's pace is taken instead: the reserve steps then
    /// fail fast (or go through, if the store is back) and their requests are answered.
    async fn lease(&mut self, ctx: &SaleContext, sale: &Sale) {
        let now = Instant::now();
        let rate = sale.drain_rate();
        // Alone, up to the whole budget (two leases), so that a lease taken late takes what
        // accrued meanwhile. Sharing it, one lease: the first to ask after a refill would
        // otherwise take it all, time after time, and starve the others. Never more than
        // is queued.
        let queued = u32::try_from(releasable(sale)).unwrap_or(u32::MAX);
        let most = match self.contended {
            true => lease_size(rate),
            false => lease_size(rate).saturating_mul(2),
        };
        let want = queued.clamp(1, most);
        let (granted, wait) = match ctx.store.lease_drain(&sale.sku, want, rate).await {
            Ok(lease) => {
                sale.adopt_drain_rate(lease.rate);
                (lease.granted, lease.next_in)
            }
            Err(e) => {
                tracing::debug!(sku = %sale.sku, error = %e, "cannot lease drain permits");
                (lease_size(sale.pace()).min(want), Duration::ZERO)
            }
        };
        self.credit = granted;
        self.contended = granted < want;
        // Sharing the budget, instances that ask at the same moments would win in the same
        // order every time: a random delay of up to half a period makes the first asker
        // anyone, so over time each gets its share.
        let jitter = match self.contended {
            true => {
                Duration::from_micros(rand::random_range(0..LEASE_PERIOD.as_micros() as u64 / 2))
            }
            false => Duration::ZERO,
        };
        self.next_lease = now + wait.max(LEASE_PERIOD) + jitter;
        self.measure(sale, now, granted);
    }

    /// Asks the store to move the line's cursor, for a head numbered `head`; the next ask
    /// comes a period later. When the store cannot be asked, the requests
    /// queued here go in their local order at this instance's pace for a period (the line
    /// falls back to local order: counted), and their reserve steps fail fast or go through.
    async fn advance(&mut self, ctx: &SaleContext, sale: &Sale, head: u64) {
        let now = Instant::now();
        let rate = sale.drain_rate();
        match ctx.store.advance_line(&sale.sku, rate).await {
            // The store's answer is the latest (one ask at a time): a cursor behind the one
            // seen is a new line (the store lost the old), taken as it is.
            Ok(line) => {
                sale.adopt_drain_rate(line.rate);
                sale.line.stepped(line.cursor, line.admitted);
                self.cursor = line.cursor;
                if head > line.admitted {
                    // The store lost the line this number was drawn in (a Redis restarted
                    // empty): the new one would not reach it for as many admissions. Such
                    // requests go in local order at this instance's pace.
                    self.fall_back(sale, now);
                } else {
                    // Asked again in a period whether or not the head is due by then: the
                    // cursor moves only when someone asks, so an instance whose requests
                    // are far back keeps it moving past numbers nobody holds (refused
                    // after their hold, or on an instance that died) at the rate.
                    self.next_lease = now + LEASE_PERIOD;
                }
            }
            Err(e) => {
                tracing::debug!(sku = %sale.sku, error = %e, "cannot move the line's cursor");
                self.fall_back(sale, now);
            }
        }
        let released = std::mem::take(&mut self.released);
        self.measure(sale, now, released);
    }

    /// A period's worth of this instance's pace in permits: its requests go in local order
    /// (counted in `flashgate_line_fallbacks_total`).
    fn fall_back(&mut self, sale: &Sale, now: Instant) {
        sale.counters.line_fallbacks.inc();
        // A period's worth, at least one: below 50/s that one lasts longer than a period.
        let pace = sale.pace();
        self.credit = lease_size(pace);
        let lasts = Duration::from_secs_f64(f64::from(self.credit) / f64::from(pace));
        self.next_lease = now + lasts.max(LEASE_PERIOD);
    }

    /// Reports what the drain achieved over each window of backlog as its share.
    fn measure(&mut self, sale: &Sale, now: Instant, granted: u32) {
        let (since, total) = self.window.get_or_insert((now, 0));
        let elapsed = now.duration_since(*since);
        if elapsed >= SHARE_WINDOW {
            sale.set_drain_share((*total as f64 / elapsed.as_secs_f64()).round() as u32);
            *since = now;
            *total = 0;
        }
        *total += u64::from(granted);
    }

    /// Leases permits once the next lease is due (waiting for it first, unless the rate
    /// changes: a new rate is leased by at once); false when the gateway stops meanwhile.
    async fn lease_when_due(
        &mut self,
        ctx: &SaleContext,
        sale: &Sale,
        (rate, paused): (&mut watch::Receiver<u32>, &mut watch::Receiver<bool>),
        shutdown: &CancellationToken,
    ) -> bool {
        if Instant::now() < self.next_lease {
            tokio::select! {
                () = tokio::time::sleep_until(self.next_lease.into()) => {}
                _ = rate.changed() => self.next_lease = Instant::now(),
                _ = paused.changed() => {}
                () = shutdown.cancelled() => return false,
            }
            return true;
        }
        tokio::select! {
            () = self.lease(ctx, sale) => {}
            () = shutdown.cancelled() => return false,
        }
        true
    }

    /// The queue ran dry: permits in hand lapse (a burst later would exceed the rate) and
    /// the next backlog is measured afresh.
    fn idle(&mut self) {
        self.credit = 0;
        self.window = None;
    }
}

/// Runs one sale's drain until `shutdown` or the sale's end; then refuses what is still
/// queued (`shutting_down`, or `sale_closed` for an ended sale) and waits for the steps in
/// flight, so every admitted request is answered.
pub async fn run(ctx: Arc<SaleContext>, sale: Arc<Sale>, shutdown: CancellationToken) {
    let mut size = sale.terms().settings.workers;
    let workers = Arc::new(Semaphore::new(size));
    let mut rate = sale.watch_rate();
    let mut paused = sale.watch_paused();
    let mut draining = sale.watch_draining();
    let mut changes = sale.watch_changes();
    let mut pacer = Pacer::new(ctx.shared);
    loop {
        if sale.is_ended() {
            break;
        }
        resize(&workers, &mut size, sale.terms().settings.workers);
        if *paused.borrow_and_update() || !*draining.borrow_and_update() {
            pacer.idle();
            tokio::select! {
                _ = paused.changed() => continue,
                _ = draining.changed() => continue,
                _ = changes.changed() => continue,
                () = shutdown.cancelled() => break,
            }
        }
        // Numbers given back at the head would hold their ring slots until the next item.
        sale.queue.pass_given_back();
        if releasable(&sale) == 0 {
            pacer.idle();
            tokio::select! {
                () = sale.queue.wait_ready() => {}
                _ = paused.changed() => {}
                _ = changes.changed() => {}
                () = shutdown.cancelled() => break,
            }
            continue;
        }
        // With no stock left, what is queued can only be told sold out: an answer that
        // reaches no backend, so it goes at the workers' pace, not the drain's (the store
        // step still records each token's answer). A step that reserves after all (stock
        // came back) shows stock again, and pacing resumes: at most a batch of `workers`
        // went unpaced.
        if pacer.credit == 0 && sale.remaining() == 0 {
            pacer.credit = u32::try_from(size).unwrap_or(u32::MAX);
        }
        if pacer.credit == 0 && !pacer.in_line {
            let watched = (&mut rate, &mut paused);
            if !pacer.lease_when_due(&ctx, &sale, watched, &shutdown).await {
                break;
            }
            continue;
        }
        let permit = tokio::select! {
            p = workers.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        // In the line, without permits in hand: only a request the cursor has passed.
        let through = (pacer.in_line && pacer.credit == 0).then_some(pacer.cursor);
        let item = match next(&ctx, &sale, through) {
            Head::Item(item) => item,
            Head::Later(head) => {
                drop(permit);
                if Instant::now() < pacer.next_lease {
                    tokio::select! {
                        () = tokio::time::sleep_until(pacer.next_lease.into()) => {}
                        _ = rate.changed() => pacer.next_lease = Instant::now(),
                        _ = paused.changed() => {}
                        _ = draining.changed() => {}
                        () = shutdown.cancelled() => break,
                    }
                    continue;
                }
                tokio::select! {
                    () = pacer.advance(&ctx, &sale, head) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            // The next request's admission is filling its slot in (a moment): wait for it,
            // so requests leave in admission order.
            Head::Filling | Head::Empty => {
                drop(permit);
                tokio::select! {
                    () = sale.queue.wait_ready() => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        if pacer.credit > 0 {
            pacer.credit -= 1;
        } else {
            pacer.released += 1;
        }
        release(&ctx, &sale, item, permit);
    }
    answer_the_rest(&ctx, &sale, &workers, size).await;
}

/// Makes `workers` (of `size` permits) `wanted` permits: more at once; fewer as the steps
/// holding them end (a task takes the surplus and forgets it).
fn resize(workers: &Arc<Semaphore>, size: &mut usize, wanted: usize) {
    let wanted = wanted.max(1);
    if wanted > *size {
        workers.add_permits(wanted - *size);
    } else if wanted < *size {
        let surplus = u32::try_from(*size - wanted).unwrap_or(u32::MAX);
        let workers = workers.clone();
        tokio::spawn(async move {
            if let Ok(p) = workers.acquire_many_owned(surplus).await {
                p.forget();
            }
        });
    }
    *size = wanted;
}

/// Requests the drain may release now or later: queued, or in the pre-queue once ranked.
fn releasable(sale: &Sale) -> usize {
    sale.queue.len().saturating_sub(sale.prequeue.unranked())
}

/// The next request to release, `through` the line's cursor if given: the pre-queue's
/// ranked members come first (their numbers come before every later arrival's), then the
/// queue's.
fn next(ctx: &SaleContext, sale: &Sale, through: Option<u64>) -> Head {
    match sale.prequeue.pop_through(through) {
        Head::Item(item) => {
            // It kept a place within the queue's capacity until now.
            sale.queue.give_back_place();
            if let (false, Some(n)) = (ctx.shared, item.line) {
                sale.line.seen(n, n);
            }
            Head::Item(item)
        }
        Head::Empty | Head::Filling => sale.queue.pop_through(through),
        later @ Head::Later(_) => later,
    }
}

/// Hands a request the drain took to an order worker.
fn release(
    ctx: &Arc<SaleContext>,
    sale: &Arc<Sale>,
    item: QueueItem,
    permit: OwnedSemaphorePermit,
) {
    ctx.tickets.update(&item.ticket, TicketStatus::Processing);
    {
        let c = &sale.counters;
        let waited = item.admitted_at.elapsed();
        c.drained.inc();
        c.queue_wait.observe(waited.as_secs_f64());
        // Against at least a millisecond: a request served at once was told ~0.
        let real = waited.as_secs_f64().max(0.001);
        let promised = item.promised_ms as f64 / 1000.0;
        c.eta_error.observe((real - promised).abs() / real);
    }
    tokio::spawn(work(ctx.clone(), sale.clone(), item, permit));
}

/// Once the drain stops: nothing is admitted from now on, and every request admitted so
/// far is answered: `shutting_down`, or `sale_closed` once the sale was ended. A number
/// taken and not yet filled in is waited for (its admission is at most a store call from
/// filling or giving it back); then the steps in flight are (`size` workers).
async fn answer_the_rest(ctx: &Arc<SaleContext>, sale: &Sale, workers: &Semaphore, size: usize) {
    let last = match sale.is_ended() {
        true => Outcome::Closed,
        false => Outcome::ShuttingDown,
    };
    sale.stop();
    loop {
        // Pre-queued members too (the opening may be ranking some: they come back). Their
        // places in the store are given up before the drain ends: one left behind would be
        // ranked at the opening though nobody holds it.
        let mut places = Vec::new();
        for mut item in sale.prequeue.take_all() {
            sale.queue.give_back_place();
            if std::mem::take(&mut item.held) {
                places.push((item.token, item.user.clone(), item.ticket));
            }
            conclude(ctx, sale, item, last);
        }
        give_up_places(ctx, sale, places).await;
        match sale.queue.pop() {
            Head::Item(item) => conclude(ctx, sale, item, last),
            Head::Empty if sale.queue.is_empty() => break,
            Head::Filling | Head::Empty | Head::Later(_) => {
                let _ = tokio::time::timeout(FILLING_WAIT, sale.queue.wait_ready()).await;
            }
        }
    }
    // The permits a shrinking left to forget are waited for as well: they end as steps do.
    let all = u32::try_from(size).unwrap_or(u32::MAX);
    let _ = workers.acquire_many(all).await;
}

/// Lets go of the holds (and so the pre-queue places) of members told `shutting_down`, a
/// few dozen at a time, and waits for them (each a store call, bounded by its timeout).
async fn give_up_places(
    ctx: &Arc<SaleContext>,
    sale: &Sale,
    places: Vec<(Token, UserId, TicketId)>,
) {
    const AT_ONCE: usize = 64;
    let mut places = places.into_iter().peekable();
    while places.peek().is_some() {
        let mut calls = tokio::task::JoinSet::new();
        for (token, user, ticket) in places.by_ref().take(AT_ONCE) {
            let (ctx, sku) = (ctx.clone(), sale.sku.clone());
            calls.spawn(async move {
                if let Err(e) = ctx.store.release_token(&sku, &token, &user, &ticket).await {
                    warn_repeated!("cannot give up a pre-queue place", sku = %sku, error = %e);
                }
            });
        }
        while calls.join_next().await.is_some() {}
    }
}

/// One order worker: the store step for one admitted request, then its outcome.
async fn work(
    ctx: Arc<SaleContext>,
    sale: Arc<Sale>,
    item: QueueItem,
    _permit: OwnedSemaphorePermit,
) {
    let req = ReserveRequest {
        sku: sale.sku.clone(),
        user: item.user.clone(),
        token: item.token,
        quantity: item.quantity,
        per_user_limit: sale.terms().per_user_limit,
    };
    // The store is behind the breaker, which bounds the call by the store timeout.
    let outcome = match ctx.store.reserve(&req).await {
        Ok(reply) => {
            // A replay reports what was decided then; the stock figure is not news.
            if !reply.replayed {
                match reply.outcome {
                    Reservation::Reserved { remaining, .. } => {
                        sale.reserved_here(item.quantity);
                        sale.set_remaining(remaining);
                        ctx.outbox_ready.notify_one();
                    }
                    Reservation::SoldOut { remaining } => sale.set_remaining(remaining),
                    Reservation::LimitReached | Reservation::InvalidToken => {}
                }
            }
            Outcome::of_reply(&reply)
        }
        Err(e) => {
            warn_repeated!("reserve step failed", sku = %sale.sku, error = %e);
            Outcome::StoreUnavailable
        }
    };
    conclude(&ctx, &sale, item, outcome);
}

/// Records an admitted request's outcome and tells whoever waits for it.
pub(super) fn conclude(ctx: &Arc<SaleContext>, sale: &Sale, item: QueueItem, outcome: Outcome) {
    // A token left unspent (the store did not answer, the gateway is stopping) may be
    // sent again, to any instance: its hold must not send it back here.
    if item.held && !outcome.binds_token() {
        let (ctx, sku, token, ticket) = (ctx.clone(), sale.sku.clone(), item.token, item.ticket);
        let user = item.user.clone();
        tokio::spawn(async move {
            // Retried: a hold left behind sends the token's next request to this ticket
            // (joined, never decided) until the hold runs out.
            for wait in [0, 1, 5, 30] {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                match ctx.store.release_token(&sku, &token, &user, &ticket).await {
                    Ok(()) => return,
                    Err(e) => tracing::debug!(%sku, error = %e, "cannot let go of a token's hold"),
                }
            }
        });
    }
    {
        let c = &sale.counters;
        c.reserve(outcome.label());
    }
    ctx.tickets
        .update(&item.ticket, TicketStatus::Done(outcome));
    if let Some(reply) = item.reply {
        let _ = reply.send(outcome);
    }
    sale.finish();
}
