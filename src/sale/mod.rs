//! A sale at run time: its window, its local view of stock, its queue and the knobs the
//! drain reads (rate, pause). Everything the admission path reads is an atomic.

pub mod admission;
pub mod book;
pub mod change;
pub mod context;
pub mod drain;
pub mod elsewhere;
pub(crate) mod hold;
pub mod line;
pub mod lookup;
pub mod opening;
pub mod order;
pub mod outcome;
pub mod prequeue;
pub mod queue;
pub mod steer;
pub mod ticket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use arc_swap::ArcSwap;

use crate::config::{Overflow, QueueConfig, ResponseMode, SaleConfig, Timestamp};
use crate::metrics::{Metrics, SaleCounters};
use crate::sale::queue::SaleQueue;
use crate::types::Sku;

/// A sale's state as `GET /sale/{sku}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    /// Before `starts_at`.
    Upcoming,
    /// Before `starts_at`, within the pre-queue window: orders join the pre-queue.
    Prequeue,
    /// Taking orders.
    Open,
    /// Paused by an operator.
    Paused,
    /// No stock left.
    SoldOut,
    /// After `ends_at`.
    Closed,
    /// Held: the store lost its state; nothing is sold until an operator loads stock.
    Held,
}

/// The queue settings a sale runs with.
#[derive(Debug, Clone)]
pub struct SaleSettings {
    /// What a full queue answers.
    pub overflow: Overflow,
    /// Where `overflow = "redirect"` sends people.
    pub redirect_url: String,
    /// Wait or async answers.
    pub response: ResponseMode,
    /// How long a wait-mode request is held.
    pub max_wait: Duration,
    /// Queued requests allowed per unit of remaining stock.
    pub admit_factor: f64,
    /// Concurrent order workers.
    pub workers: usize,
    /// With `drain_rate = "auto"`: the bounds the drain rate is steered within.
    pub steered: Option<DrainBounds>,
}

/// The bounds of a steered drain rate (`queue.drain_min`, `queue.drain_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainBounds {
    /// The least it goes down to.
    pub min: u32,
    /// The most it goes up to.
    pub max: u32,
}

/// What an operator defines of a sale and may change while it runs (the admin API, a
/// reload): its window, per-user limit, pre-queue and queue settings.
#[derive(Debug, Clone)]
pub struct Terms {
    /// Opening time, if any.
    pub starts_at: Option<Timestamp>,
    /// Closing time, if any.
    pub ends_at: Option<Timestamp>,
    /// Most units per user.
    pub per_user_limit: u32,
    /// How long before the opening orders join the pre-queue, if it has one.
    pub prequeue: Option<Duration>,
    /// How its queue answers, waits and drains.
    pub settings: SaleSettings,
}

impl Terms {
    /// The terms of a sale's definition under the effective queue settings.
    pub fn of(cfg: &SaleConfig, q: &QueueConfig) -> Self {
        Self {
            starts_at: cfg.starts_at,
            ends_at: cfg.ends_at,
            per_user_limit: cfg.per_user_limit,
            prequeue: cfg.prequeue,
            settings: SaleSettings {
                overflow: q.overflow,
                redirect_url: q.redirect_url.clone(),
                response: q.response,
                max_wait: q.max_wait,
                admit_factor: q.admit_factor,
                workers: q.workers,
                steered: q.drain_rate.is_auto().then_some(DrainBounds {
                    min: q.drain_min,
                    max: q.drain_max,
                }),
            },
        }
    }

    /// When it opens, if it has an opening time.
    pub fn starts(&self) -> Option<SystemTime> {
        self.starts_at.map(Timestamp::system_time)
    }

    /// When it closes, if it has a closing time.
    pub fn ends(&self) -> Option<SystemTime> {
        self.ends_at.map(Timestamp::system_time)
    }

    /// When orders start joining its pre-queue, if it has one.
    pub fn prequeue_opens(&self) -> Option<SystemTime> {
        self.starts().zip(self.prequeue).map(|(s, w)| s - w)
    }
}

/// One sale.
pub struct Sale {
    /// What it sells: its name in routes, the store and metrics.
    pub sku: Sku,
    /// Its terms now: replaced whole when an operator changes them, read without a lock.
    terms: ArcSwap<Terms>,
    /// Bumped whenever its terms change or it ends, for the tasks that wait on them.
    changed: watch::Sender<u64>,
    /// Set once it was ended (`DELETE /admin/sales/{sku}`): closed for good.
    ended: AtomicBool,
    /// Set once its drain and opening were started (they run once a sale).
    tasks: AtomicBool,
    /// The queue capacity and drain rate its definition sets (an operator's stored
    /// setting may stand instead): a new definition changes them only where it differs.
    configured: (AtomicUsize, AtomicU32),
    /// The bounded FIFO queue its admitted requests wait in.
    pub queue: SaleQueue,
    /// Its metrics, resolved once.
    pub counters: SaleCounters,
    /// Stock left, as the last store step reported it.
    remaining: AtomicU64,
    /// Set once the store reports no stock; cleared when stock comes back.
    sold_out: AtomicBool,
    /// Set while the store has lost this sale's state (see [`SaleState::Held`]).
    held: AtomicBool,
    /// Set once the sale's drain has stopped: nothing more is admitted.
    stopped: AtomicBool,
    /// Admitted requests not finished yet (queued or being processed).
    pending: AtomicUsize,
    /// The other instances' pending requests, as the last stock sync read them.
    elsewhere: elsewhere::PendingElsewhere,
    /// Age (ms) of its oldest reserved order the backend has not taken yet, and how many
    /// such orders there are, as the last stock sync read them (fleet-wide with a shared
    /// store).
    outbox_lag_ms: AtomicU64,
    outbox_orders: AtomicU64,
    /// What the last steering of an "auto" drain rate did ([`steer::Steer`]).
    steered: AtomicU8,
    /// Its total drain rate across the instances sharing the store.
    rate: watch::Sender<u32>,
    /// What this instance's drain achieved while it had requests queued, per second (0
    /// until measured): its share of `rate`, which ETAs are reckoned by.
    share: AtomicU32,
    paused: watch::Sender<bool>,
    draining: watch::Sender<bool>,
    /// The fleet's line of this sale as this instance last saw it (shared store).
    pub line: line::LineView,
    /// Orders that joined before the opening, shuffled at it (a sale with `prequeue`).
    pub prequeue: prequeue::PreQueue,
}

impl Sale {
    /// Builds a sale from its config and the effective queue settings; its counters are
    /// resolved in `metrics`.
    pub fn new(cfg: &SaleConfig, q: &QueueConfig, metrics: &Metrics) -> Self {
        Self {
            sku: Sku::new(&cfg.sku),
            terms: ArcSwap::from_pointee(Terms::of(cfg, q)),
            changed: watch::Sender::new(0),
            ended: AtomicBool::new(false),
            tasks: AtomicBool::new(false),
            configured: (AtomicUsize::new(q.capacity), AtomicU32::new(q.start_rate())),
            queue: SaleQueue::new(q.capacity),
            counters: metrics.for_sale(&cfg.sku),
            remaining: AtomicU64::new(cfg.stock),
            sold_out: AtomicBool::new(cfg.stock == 0),
            held: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            elsewhere: elsewhere::PendingElsewhere::default(),
            outbox_lag_ms: AtomicU64::new(0),
            outbox_orders: AtomicU64::new(0),
            steered: AtomicU8::new(steer::Steer::Unsteered.code()),
            rate: watch::Sender::new(q.start_rate()),
            share: AtomicU32::new(0),
            paused: watch::Sender::new(false),
            draining: watch::Sender::new(true),
            line: line::LineView::default(),
            prequeue: prequeue::PreQueue::new(),
        }
    }

    /// Its terms now (one atomic load; a change after it is seen by the next call).
    pub fn terms(&self) -> Arc<Terms> {
        self.terms.load_full()
    }

    /// Replaces its terms (an operator's change); the tasks waiting on them see it.
    pub fn redefine(&self, terms: Terms) {
        self.terms.store(Arc::new(terms));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Ends it for good: closed, its drain answers what is queued `sale_closed` and stops.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.changed.send_modify(|n| *n += 1);
    }

    /// True the first time only: whoever gets it starts the sale's tasks.
    pub fn claim_tasks(&self) -> bool {
        !self.tasks.swap(true, Ordering::AcqRel)
    }

    /// The queue capacity its definition sets.
    pub fn configured_capacity(&self) -> usize {
        self.configured.0.load(Ordering::Relaxed)
    }

    /// Records the queue capacity its definition sets.
    pub fn set_configured_capacity(&self, capacity: usize) {
        self.configured.0.store(capacity, Ordering::Relaxed);
    }

    /// The drain rate its definition sets.
    pub fn configured_rate(&self) -> u32 {
        self.configured.1.load(Ordering::Relaxed)
    }

    /// Records the drain rate its definition sets.
    pub fn set_configured_rate(&self, rate: u32) {
        self.configured.1.store(rate, Ordering::Relaxed);
    }

    /// True once it was ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Follows changes of its terms and its end.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// When it opens, if it has an opening time.
    pub fn starts(&self) -> Option<SystemTime> {
        self.terms.load().starts()
    }

    /// The state at `now`.
    pub fn state(&self, now: SystemTime) -> SaleState {
        let terms = self.terms.load();
        if self.is_ended() {
            SaleState::Closed
        } else if terms.starts().is_some_and(|s| now < s) {
            match terms.prequeue_opens() {
                // Taking orders into the pre-queue: a hold or a pause stops that too.
                Some(opens) if now >= opens && self.is_held() => SaleState::Held,
                Some(opens) if now >= opens && self.is_paused() => SaleState::Paused,
                Some(opens) if now >= opens => SaleState::Prequeue,
                _ => SaleState::Upcoming,
            }
        } else if terms.ends().is_some_and(|e| now >= e) {
            SaleState::Closed
        } else if self.is_held() {
            SaleState::Held
        } else if self.is_paused() {
            SaleState::Paused
        } else if self.sold_out.load(Ordering::Acquire) {
            SaleState::SoldOut
        } else {
            SaleState::Open
        }
    }

    /// Stock left as last reported by the store.
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Acquire)
    }

    /// Records the store's latest stock figure; zero sets the sold-out flag, more clears it.
    pub fn set_remaining(&self, remaining: u64) {
        self.remaining.store(remaining, Ordering::Release);
        self.sold_out.store(remaining == 0, Ordering::Release);
    }

    /// True while the sale is held because the store lost its state.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Holds (true) or releases (false) the sale for lost store state.
    pub fn set_held(&self, held: bool) {
        self.held.store(held, Ordering::Release);
    }

    /// Marks the drain stopped: admission refuses from now on (a request admitted after
    /// the drain's last sweep would be told "queued" and never answered).
    pub fn stop(&self) {
        // SeqCst, paired with the queue's: an admission either sees the stop, or its
        // number is seen by the drain's last sweep.
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// True once the drain has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Admitted requests not finished yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Counts an admitted request; returns the new total.
    pub fn begin(&self) -> usize {
        self.pending.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Un-counts an admitted request that reached its outcome.
    pub fn finish(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// The other instances' pending requests: as last read from the store, less what they
    /// reserved since ([`elsewhere`]).
    pub fn pending_elsewhere(&self) -> usize {
        self.elsewhere.now(self.remaining())
    }

    /// Records the other instances' pending requests, read with the stock figure now held.
    pub fn set_pending_elsewhere(&self, n: usize) {
        self.elsewhere.record(n, self.remaining());
    }

    /// Counts `units` this instance's drain reserved.
    pub fn reserved_here(&self, units: u32) {
        self.elsewhere.reserved_here(units);
    }

    /// The age of its oldest reserved order the backend has not taken yet (zero: none).
    pub fn outbox_lag(&self) -> Duration {
        Duration::from_millis(self.outbox_lag_ms.load(Ordering::Relaxed))
    }

    /// What the last steering of its drain rate did.
    pub fn steered(&self) -> steer::Steer {
        steer::Steer::from_code(self.steered.load(Ordering::Relaxed))
    }

    /// Records what a steering did.
    pub fn set_steered(&self, s: steer::Steer) {
        self.steered.store(s.code(), Ordering::Relaxed);
    }

    /// Its reserved orders the backend has not taken yet.
    pub fn outbox_orders(&self) -> u64 {
        self.outbox_orders.load(Ordering::Relaxed)
    }

    /// Records the outbox as the store shows it: its lag and how many orders it holds.
    pub fn set_outbox(&self, lag: Duration, orders: u64) {
        let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        self.outbox_lag_ms.store(ms, Ordering::Relaxed);
        self.outbox_orders.store(orders, Ordering::Relaxed);
    }

    /// How many requests stock-aware admission lets wait for the stock left: remaining ×
    /// admit_factor, rounded up.
    pub fn admissible(&self) -> u64 {
        (self.remaining() as f64 * self.terms.load().settings.admit_factor).ceil() as u64
    }

    /// Stock-aware admission: may one more request join, given what is already pending
    /// here and on the other instances? Pending requests may reach remaining ×
    /// admit_factor; beyond that a new one could only reserve if many ahead of it fail,
    /// so it is told sold out at once.
    pub fn has_room_for_one_more(&self) -> bool {
        ((self.pending() + self.pending_elsewhere()) as u64) < self.admissible()
    }

    /// Queued requests released per second, in total across the instances.
    pub fn drain_rate(&self) -> u32 {
        *self.rate.borrow()
    }

    /// Changes the drain rate; the drain picks it up at once.
    pub fn set_drain_rate(&self, rate: u32) {
        self.rate.send_replace(rate.max(1));
    }

    /// Takes the drain rate the store holds, waking the drain only if it changed.
    pub fn adopt_drain_rate(&self, rate: u32) {
        let rate = rate.max(1);
        self.rate
            .send_if_modified(|r| std::mem::replace(r, rate) != rate);
    }

    /// This instance's measured share of the drain rate, per second (0: not measured yet).
    pub fn drain_share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    /// Records this instance's measured share of the drain rate.
    pub fn set_drain_share(&self, per_second: u32) {
        self.share.store(per_second, Ordering::Relaxed);
    }

    /// The pace this instance releases requests at: its measured share, else the rate.
    pub fn pace(&self) -> u32 {
        match self.drain_share() {
            0 => self.drain_rate().max(1),
            share => share,
        }
    }

    /// Follows drain-rate changes.
    pub fn watch_rate(&self) -> watch::Receiver<u32> {
        self.rate.subscribe()
    }

    /// True while an operator has paused the sale.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Pauses (true) or resumes (false) admission and the drain.
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Follows pause changes.
    pub fn watch_paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    /// Holds (false) or restarts (true) the drain alone: admission goes on filling the
    /// bounded queue, e.g. while the backend is briefly down.
    pub fn set_draining(&self, draining: bool) {
        self.draining.send_replace(draining);
    }

    /// True unless the drain is held.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Follows drain-hold changes.
    pub fn watch_draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Estimated milliseconds until queue position `position` is processed, at this
    /// instance's share of the rate (another instance's queue takes the rest).
    pub fn eta_ms(&self, position: u64) -> u64 {
        position.saturating_mul(1000) / u64::from(self.pace())
    }

    /// A queued request's position and estimated wait in milliseconds: in the fleet's line
    /// at the fleet's rate when it drew number `line` there (the same figures whichever
    /// instance answers), else in this instance's queue (number `seq`) at its share.
    pub fn place(&self, seq: u64, line: Option<u64>) -> (u64, u64) {
        match line {
            Some(n) => {
                let position = self.line.position(n);
                let eta = position.saturating_mul(1000) / u64::from(self.drain_rate().max(1));
                (position, eta)
            }
            // Behind whatever of the pre-queue is still waiting.
            None => {
                let position =
                    self.queue.position(seq).unwrap_or(0) + self.prequeue.waiting() as u64;
                (position, self.eta_ms(position))
            }
        }
    }

    /// Seconds a refused client should wait before retrying: how long the drain takes to
    /// make real room (a tenth of the queue), at least one.
    pub fn retry_after_secs(&self) -> u32 {
        let tenth = (self.queue.capacity() as u64).div_ceil(10);
        (tenth / u64::from(self.pace())).clamp(1, 60) as u32
    }
}

/// All sales, by sku: read without locks; a sale created while the gateway runs replaces
/// the map whole (sales are few and created rarely).
pub struct Sales {
    by_sku: ArcSwap<HashMap<Sku, Arc<Sale>>>,
}

impl Sales {
    /// The sales of a configuration, their counters in `metrics`.
    pub fn new(sales: &[SaleConfig], defaults: &QueueConfig, metrics: &Metrics) -> Self {
        let by_sku = sales
            .iter()
            .map(|s| {
                let sale = Arc::new(Sale::new(s, &defaults.for_sale(s), metrics));
                (sale.sku.clone(), sale)
            })
            .collect();
        Self {
            by_sku: ArcSwap::from_pointee(by_sku),
        }
    }

    /// The sale with this sku.
    pub fn get(&self, sku: &str) -> Option<Arc<Sale>> {
        self.by_sku.load().get(sku).cloned()
    }

    /// Every sale, as they are now.
    pub fn all(&self) -> Vec<Arc<Sale>> {
        self.by_sku.load().values().cloned().collect()
    }

    /// Adds `sale` unless one has its sku; returns the sale under that sku.
    pub fn insert(&self, sale: Arc<Sale>) -> Arc<Sale> {
        let mut kept = sale.clone();
        self.by_sku.rcu(|map| {
            let mut map = HashMap::clone(map);
            kept = map
                .entry(sale.sku.clone())
                .or_insert_with(|| sale.clone())
                .clone();
            map
        });
        kept
    }
}
