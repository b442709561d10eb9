//! The sales this instance runs, by the store's book of definitions. Every instance reads
//! the book (a counter each `store.sync_interval`, the book itself only when it moved) and
//! applies what changed: a new sale is created (its stock loaded, its drain and opening
//! started), a changed one takes its new terms, an ended one closes. The config file's
//! sales seed the book once; from then on the book's definition stands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::change::{self, ChangeRefused, FileChanges};
use super::context::SaleContext;
use super::{Sale, Terms};
use crate::config::{DrainRate, QueueConfig, SaleConfig};
use crate::store::{Definition, Expected, Origin, SaleControl, StoreError, Versioned, Written};
use crate::types::Sku;

/// The version and origin of the definition a sale runs by here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Its version in the book.
    pub version: u64,
    /// Who wrote it.
    pub origin: Origin,
}

/// What a reload did to the file's sales, by sku.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// New in the file: created.
    pub created: Vec<String>,
    /// Changed in the file: redefined.
    pub changed: Vec<String>,
    /// Gone from the file: ended.
    pub ended: Vec<String>,
    /// Changed through the API (or ended) since: the file's definition not applied.
    pub skipped: Vec<String>,
}

/// Why a reload's sales were not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    /// The store did not answer.
    #[error("the store did not take the sales' definitions: {0}")]
    Store(#[from] StoreError),
    /// A sale of the file changed in a way the running sale does not allow.
    #[error("sale `{sku}`: {refused}")]
    Change {
        /// The sale.
        sku: String,
        /// Why.
        refused: ChangeRefused,
    },
}

/// Settings a definition changed that the store has not taken yet (it did not answer):
/// stored again at each sync and by a PUT of the same definition, until it does. An
/// operator's own setting since replaces them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Owed {
    capacity: Option<usize>,
    drain_rate: Option<u32>,
}

/// A setting an operator stores for a sale directly (`PUT …/capacity`, `…/drain_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The queue's capacity.
    Capacity,
    /// The drain rate.
    DrainRate,
}

/// This instance's side of the book of sale definitions.
pub struct SaleBook {
    ctx: Arc<SaleContext>,
    /// The `[queue]` defaults a definition's overrides apply to.
    queue: ArcSwap<QueueConfig>,
    /// Ends the tasks of the sales it starts.
    shutdown: CancellationToken,
    /// The book's revision last applied.
    revision: AtomicU64,
    /// What each sale runs by here, and the definition itself.
    applied: Mutex<HashMap<Sku, (Applied, Definition)>>,
    /// Sales created here whose stock could not be loaded yet (the store did not answer).
    unloaded: Mutex<Vec<SaleConfig>>,
    /// File sales not written to the book yet (the store did not answer).
    unseeded: Mutex<Vec<SaleConfig>>,
    /// Settings written definitions changed that the store has not taken yet.
    owed: Mutex<HashMap<Sku, Owed>>,
    /// The config file's sales as last read (seeded again should the store lose the book).
    file: Mutex<Vec<SaleConfig>>,
    /// One reading of the book at a time (the periodic one, an admin write's, a reload's).
    reading: tokio::sync::Mutex<()>,
    /// Whether this gateway delivers orders itself, and so can steer an "auto" drain rate
    /// (not in stream mode).
    steers: bool,
}

impl SaleBook {
    /// The book of `ctx`'s sales, under the `queue` defaults; the tasks of sales it starts
    /// run until `shutdown`.
    pub fn new(ctx: Arc<SaleContext>, queue: &QueueConfig, shutdown: CancellationToken) -> Self {
        Self {
            ctx,
            queue: ArcSwap::from_pointee(queue.clone()),
            shutdown,
            revision: AtomicU64::new(0),
            applied: Mutex::default(),
            unloaded: Mutex::default(),
            unseeded: Mutex::default(),
            owed: Mutex::default(),
            file: Mutex::default(),
            reading: tokio::sync::Mutex::new(()),
            steers: true,
        }
    }

    /// A book whose gateway does not deliver (stream mode): it refuses "auto" drain rates.
    pub fn without_steering(mut self) -> Self {
        self.steers = false;
        self
    }

    /// Whether `sale`'s drain rate (under the `[queue]` defaults) is one this gateway can
    /// run: an "auto" rate needs the gateway's own deliveries to steer by.
    pub fn can_drain(&self, sale: &SaleConfig) -> bool {
        self.steers || !self.queue.load().for_sale(sale).drain_rate.is_auto()
    }

    /// Seeds the book with the file's sales it does not hold yet (a first start), then
    /// applies it; what the store did not take is tried again at each sync. A definition
    /// changed since (through the API, or a reload elsewhere) is not overwritten: the
    /// file's is only logged as different.
    pub async fn seed(&self, file: &[SaleConfig]) -> Result<(), StoreError> {
        *lock(&self.file) = file.to_vec();
        lock(&self.unseeded).extend(file.iter().cloned());
        self.sync().await
    }

    /// Writes the file's sales the book does not hold yet.
    async fn seed_now(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *lock(&self.unseeded));
        for (i, sale) in pending.iter().enumerate() {
            if let Err(e) = self.seed_one(sale).await {
                lock(&self.unseeded).extend(pending[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes one file sale unless the book holds it.
    async fn seed_one(&self, sale: &SaleConfig) -> Result<(), StoreError> {
        let def = Definition {
            sale: sale.clone(),
            origin: Origin::File,
            ended: false,
        };
        if let Written::Conflict { current: Some(c) } =
            self.ctx.store.write_sale(&def, Expected::Absent).await?
        {
            if !c.definition.same_sale(&def) {
                tracing::info!(sku = %sale.sku, version = c.version, origin = ?c.definition.origin,
                    ended = c.definition.ended,
                    "the store's definition of this sale differs from the file's and stands \
                     (it may be newer: another instance's file, or the API); PUT \
                     /admin/sales/SKU to change it (a reload applies only what the file \
                     changes after this start)");
            }
        }
        Ok(())
    }

    /// Writes `definition` if the book holds what `expected` says, and applies the book at
    /// once on this instance (the others within `store.sync_interval`). With `previous`
    /// (the definition it replaces), a queue capacity or drain rate it changes is stored as
    /// the sale's setting too, so that one an operator stored before does not shadow it;
    /// if the store does not take that, the error is returned though the definition was
    /// written (the setting is stored again at each sync, and by the same write again).
    pub async fn write(
        &self,
        definition: &Definition,
        expected: Expected,
        previous: Option<&Definition>,
    ) -> Result<Written, StoreError> {
        let written = self.ctx.store.write_sale(definition, expected).await?;
        if let Written::Written { .. } = written {
            let settings = match previous {
                Some(previous) => self.store_settings(&previous.sale, &definition.sale).await,
                None => Ok(()),
            };
            self.sync().await?;
            settings?;
        }
        Ok(written)
    }

    /// Stores the capacity and drain rate `after` sets, where they differ from `before`'s
    /// (under the `[queue]` defaults); what the store does not take stays owed.
    async fn store_settings(
        &self,
        before: &SaleConfig,
        after: &SaleConfig,
    ) -> Result<(), StoreError> {
        let q = self.queue.load();
        let (was, is) = (q.for_sale(before), q.for_sale(after));
        let owed = Owed {
            capacity: (was.capacity != is.capacity).then_some(is.capacity),
            // An "auto" rate is the steering's to store, not the definition's.
            drain_rate: match is.drain_rate {
                DrainRate::Fixed(rate) if was.drain_rate != is.drain_rate => Some(rate),
                _ => None,
            },
        };
        let sku = Sku::new(&after.sku);
        if owed != Owed::default() {
            let mut all = lock(&self.owed);
            let entry = all.entry(sku.clone()).or_default();
            entry.capacity = owed.capacity.or(entry.capacity);
            entry.drain_rate = owed.drain_rate.or(entry.drain_rate);
        }
        self.pay(&sku).await
    }

    /// Stores what is owed for `sku`, if anything: what the store does not take stays owed.
    pub async fn pay(&self, sku: &Sku) -> Result<(), StoreError> {
        let Some(owed) = lock(&self.owed).get(sku).copied() else {
            return Ok(());
        };
        let mut result = Ok(());
        let mut paid = Owed::default();
        if let Some(capacity) = owed.capacity {
            match self
                .ctx
                .store
                .set_control(sku, SaleControl::Capacity(capacity))
                .await
            {
                Ok(()) => paid.capacity = Some(capacity),
                Err(e) => result = Err(e),
            }
        }
        if let Some(rate) = owed.drain_rate {
            match self.ctx.store.set_drain_rate(sku, rate).await {
                Ok(()) => paid.drain_rate = Some(rate),
                Err(e) => result = Err(e),
            }
        }
        let mut all = lock(&self.owed);
        if let Some(left) = all.get_mut(sku) {
            // Only what was paid: a newer definition's, or an operator's clearing, stands.
            if paid.capacity.is_some() && left.capacity == paid.capacity {
                left.capacity = None;
            }
            if paid.drain_rate.is_some() && left.drain_rate == paid.drain_rate {
                left.drain_rate = None;
            }
            if *left == Owed::default() {
                all.remove(sku);
            }
        }
        if let Err(e) = &result {
            tracing::warn!(%sku, error = %e,
                "a changed definition's setting was not stored; storing it again at each sync");
        }
        result
    }

    /// An operator stored `setting` for `sku` directly: a definition's older one owed for
    /// it must not overwrite it later.
    pub fn overridden(&self, sku: &Sku, setting: Setting) {
        if let Some(owed) = lock(&self.owed).get_mut(sku) {
            match setting {
                Setting::Capacity => owed.capacity = None,
                Setting::DrainRate => owed.drain_rate = None,
            }
        }
    }

    /// Stores what every sale owes (each sync).
    async fn pay_all(&self) {
        let owing: Vec<Sku> = lock(&self.owed).keys().cloned().collect();
        for sku in owing {
            // Logged by `pay`; tried again at the next sync.
            let _ = self.pay(&sku).await;
        }
    }

    /// Applies a reloaded config file: its `[queue]` defaults to every sale, and to the
    /// book the sales the file changed since it was last read (a sale new in it created, a
    /// changed one redefined, one gone from it ended) — unless the API changed that sale
    /// since: an operator's change outranks the file. Each change follows the rules of a
    /// running sale ([`change::check`]); one that breaks them refuses the whole reload,
    /// before anything is written. A file that changed no sale needs no store.
    pub async fn reload(
        &self,
        now: &[SaleConfig],
        queue: &QueueConfig,
    ) -> Result<Reloaded, ReloadRefused> {
        let before = lock(&self.file).clone();
        let changes = FileChanges::between(&before, now);
        let mut done = Reloaded::default();
        if !changes.is_empty() {
            done = self.write_changes(&changes).await?;
        }
        *lock(&self.file) = now.to_vec();
        let queue_changed =
            serde_json::to_value(&**self.queue.load()).ok() != serde_json::to_value(queue).ok();
        if queue_changed {
            self.queue.store(Arc::new(queue.clone()));
            self.reapply_all().await;
        }
        if !changes.is_empty() {
            self.sync().await?;
        }
        Ok(done)
    }

    /// Writes a reloaded file's changes to the book: checked all first, then written.
    async fn write_changes(&self, changes: &FileChanges) -> Result<Reloaded, ReloadRefused> {
        let held: HashMap<String, Versioned> = self
            .read_all()
            .await?
            .into_iter()
            .map(|v| (v.definition.sale.sku.clone(), v))
            .collect();
        let mut done = Reloaded::default();
        let mut writes = Vec::new();
        for sale in &changes.changed {
            let mut def = Definition {
                sale: sale.clone(),
                origin: Origin::File,
                ended: false,
            };
            let Some(v) = held.get(&sale.sku) else {
                writes.push((def, Expected::Absent, None));
                continue;
            };
            if v.definition.origin == Origin::Api || v.definition.ended {
                done.skipped.push(sale.sku.clone());
                continue;
            }
            // The stock is the book's since creation: the file's is only its first figure.
            if def.sale.stock != v.definition.sale.stock {
                tracing::warn!(sku = %sale.sku, file = def.sale.stock, kept = v.definition.sale.stock,
                    "a reload does not change stock; use PUT /admin/sales/SKU/stock");
                def.sale.stock = v.definition.sale.stock;
            }
            check_change(self, &v.definition, &def.sale).map_err(|refused| {
                ReloadRefused::Change {
                    sku: sale.sku.clone(),
                    refused,
                }
            })?;
            writes.push((
                def,
                Expected::Version(v.version),
                Some(v.definition.clone()),
            ));
        }
        for sku in &changes.gone {
            match held.get(sku) {
                Some(v) if v.definition.origin == Origin::File && !v.definition.ended => {
                    let ended = Definition {
                        ended: true,
                        ..v.definition.clone()
                    };
                    writes.push((ended, Expected::Version(v.version), None));
                }
                _ => {}
            }
        }
        for (def, expected, previous) in writes {
            let sku = def.sale.sku.clone();
            let written = self.ctx.store.write_sale(&def, expected).await?;
            match (written, expected, def.ended) {
                (Written::Conflict { .. }, _, _) => done.skipped.push(sku),
                (_, _, true) => done.ended.push(sku),
                (_, Expected::Absent, _) => done.created.push(sku),
                _ => done.changed.push(sku),
            }
            if let Some(previous) = previous {
                // Logged, owed and stored again at each sync: the definition stands.
                let _ = self.store_settings(&previous.sale, &def.sale).await;
            }
        }
        Ok(done)
    }

    /// The book as the store holds it now (one read, whatever the revision).
    pub async fn read_all(&self) -> Result<Vec<Versioned>, StoreError> {
        Ok(self
            .ctx
            .store
            .sale_book(u64::MAX)
            .await?
            .unwrap_or_default()
            .sales)
    }

    /// The definition of `sku` the store holds now, with its version.
    pub async fn read(&self, sku: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self
            .read_all()
            .await?
            .into_iter()
            .find(|v| v.definition.sale.sku == sku))
    }

    /// What `sku` runs by here, if it came from the book.
    pub fn applied(&self, sku: &Sku) -> Option<Applied> {
        lock(&self.applied).get(sku).map(|(a, _)| *a)
    }

    /// The context the book's sales run in.
    pub fn context(&self) -> &Arc<SaleContext> {
        &self.ctx
    }

    /// Reads the book if it moved since, and applies what changed; loads the stock of
    /// sales created here that could not load it before.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let _one = self.reading.lock().await;
        self.seed_now().await?;
        self.load_unloaded().await;
        self.pay_all().await;
        let known = self.revision.load(Ordering::Acquire);
        let Some(book) = self.ctx.store.sale_book(known).await? else {
            return Ok(());
        };
        if book.revision < known {
            // The store lost the book (and with it, likely, everything): the file's sales
            // are written again at the next sync; what runs here goes on meanwhile.
            tracing::warn!(
                known,
                now = book.revision,
                "the store lost the book of sales; seeding it again from the file"
            );
            lock(&self.unseeded).extend(lock(&self.file).iter().cloned());
        }
        for v in &book.sales {
            self.apply(v, false).await;
        }
        self.revision.store(book.revision, Ordering::Release);
        Ok(())
    }

    /// Applies every definition it runs by again (new `[queue]` defaults), from what it
    /// keeps: no store needed.
    async fn reapply_all(&self) {
        let _one = self.reading.lock().await;
        let all: Vec<(Applied, Definition)> = lock(&self.applied).values().cloned().collect();
        for (a, definition) in all {
            let v = Versioned {
                definition,
                version: a.version,
            };
            self.apply(&v, true).await;
        }
    }

    /// Runs its sale by definition `v`, unless it already does (or `again`).
    async fn apply(&self, v: &Versioned, again: bool) {
        let def = &v.definition;
        let sku = Sku::new(&def.sale.sku);
        let current = lock(&self.applied).get(&sku).cloned();
        // The same version is not enough: a store that lost the book numbers anew.
        let unchanged = current.is_some_and(|(a, d)| a.version == v.version && d.same_sale(def));
        if unchanged && !again {
            return;
        }
        let q = self.queue.load().for_sale(&def.sale);
        match self.ctx.sales.get(sku.as_str()) {
            Some(sale) if def.ended => {
                if !sale.is_ended() {
                    tracing::info!(%sku, version = v.version, "sale ended: closed, its queue answered sale_closed");
                    sale.end();
                }
            }
            Some(sale) => redefine(&sale, &def.sale, &q),
            None => self.create(def, &q).await,
        }
        let applied = Applied {
            version: v.version,
            origin: def.origin,
        };
        lock(&self.applied).insert(sku, (applied, def.clone()));
    }

    /// Creates the sale `def` defines, loads its stock and starts its tasks (an ended one
    /// is only there to answer `closed`).
    async fn create(&self, def: &Definition, q: &QueueConfig) {
        let sale = Arc::new(Sale::new(&def.sale, q, &self.ctx.metrics));
        let sale = self.ctx.sales.insert(sale);
        if def.ended {
            sale.end();
            return;
        }
        tracing::info!(sku = %sale.sku, origin = ?def.origin, "sale created");
        if let Err(e) = self.ctx.load_stock(std::slice::from_ref(&def.sale)).await {
            tracing::warn!(sku = %sale.sku, error = %e, "cannot load the new sale's stock yet; trying again");
            lock(&self.unloaded).push(def.sale.clone());
        }
        self.ctx.sync_controls(&sale).await;
        start_tasks(&self.ctx, &sale, &self.shutdown);
    }

    /// Loads the stock of sales created while the store did not answer.
    async fn load_unloaded(&self) {
        let pending = std::mem::take(&mut *lock(&self.unloaded));
        if pending.is_empty() {
            return;
        }
        if self.ctx.load_stock(&pending).await.is_err() {
            lock(&self.unloaded).extend(pending);
        }
    }
}

/// Locks one of its lists: only ever changed whole, a poisoned one is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Gives a running `sale` the terms of `cfg`: its window, limit and queue settings at
/// once; its capacity and drain rate when the definition changed them (an operator's
/// stored setting is re-applied by the next sync).
fn redefine(sale: &Sale, cfg: &SaleConfig, q: &QueueConfig) {
    tracing::info!(sku = %sale.sku, "sale redefined");
    if sale.configured_capacity() != q.capacity {
        if sale.queue.set_capacity(q.capacity).is_err() {
            tracing::warn!(sku = %sale.sku, capacity = q.capacity, max = sale.queue.max_capacity(),
                "the new queue capacity is above what this instance's queue can hold; it keeps its own");
        }
        sale.set_configured_capacity(q.capacity);
    }
    let was_auto = sale.terms().settings.steered.is_some();
    match q.drain_rate {
        DrainRate::Fixed(rate) if was_auto || sale.configured_rate() != rate => {
            sale.set_drain_rate(rate);
            sale.set_configured_rate(rate);
        }
        DrainRate::Fixed(_) => {}
        // Steered from where it is, within the new bounds.
        DrainRate::Auto => {
            let now = sale.drain_rate();
            let within = now.clamp(q.drain_min, q.drain_max);
            if within != now {
                sale.set_drain_rate(within);
            }
            sale.set_configured_rate(within);
        }
    }
    sale.redefine(Terms::of(cfg, q));
}

/// Starts `sale`'s drain and opening on the context's task tracker, until `shutdown` (or
/// the sale's end); once a sale.
pub fn start_tasks(ctx: &Arc<SaleContext>, sale: &Arc<Sale>, shutdown: &CancellationToken) {
    if !sale.claim_tasks() {
        return;
    }
    ctx.sale_tasks.spawn(super::drain::run(
        ctx.clone(),
        sale.clone(),
        shutdown.clone(),
    ));
    ctx.sale_tasks.spawn(super::opening::run(
        ctx.clone(),
        sale.clone(),
        shutdown.clone(),
    ));
}

/// Checks `next` against the definition `current` of the sale this instance may run.
pub fn check_change(
    book: &SaleBook,
    current: &Definition,
    next: &SaleConfig,
) -> Result<(), ChangeRefused> {
    let sale = book.ctx.sales.get(&next.sku);
    change::check(current, next, sale.as_deref())
}
