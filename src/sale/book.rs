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

use super::context::SaleContext;
use super::{Sale, Terms};
use crate::config::{QueueConfig, SaleConfig};
use crate::store::{Definition, Expected, Origin, StoreError, Versioned, Written};
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

/// This instance's side of the book of sale definitions.
pub struct SaleBook {
    ctx: Arc<SaleContext>,
    /// The `[queue]` defaults a definition's overrides apply to.
    queue: ArcSwap<QueueConfig>,
    /// Ends the tasks of the sales it starts.
    shutdown: CancellationToken,
    /// The book's revision last applied.
    revision: AtomicU64,
    /// What each sale runs by here.
    applied: Mutex<HashMap<Sku, Applied>>,
    /// Sales created here whose stock could not be loaded yet (the store did not answer).
    unloaded: Mutex<Vec<SaleConfig>>,
    /// File sales not written to the book yet (the store did not answer).
    unseeded: Mutex<Vec<SaleConfig>>,
    /// One reading of the book at a time (the periodic one, an admin write's).
    reading: tokio::sync::Mutex<()>,
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
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// Seeds the book with the file's sales it does not hold yet (a first start), then
    /// applies it; what the store did not take is tried again at each sync. A definition
    /// changed since (through the API, or a reload elsewhere) is not overwritten: the
    /// file's is only logged as different.
    pub async fn seed(&self, file: &[SaleConfig]) -> Result<(), StoreError> {
        self.lock(&self.unseeded).extend(file.iter().cloned());
        self.sync().await
    }

    /// Writes the file's sales the book does not hold yet.
    async fn seed_now(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.lock(&self.unseeded));
        for (i, sale) in pending.iter().enumerate() {
            if let Err(e) = self.seed_one(sale).await {
                self.lock(&self.unseeded)
                    .extend(pending[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes one file sale unless the book holds it.
    async fn seed_one(&self, sale: &SaleConfig) -> Result<(), StoreError> {
        {
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
                         (reload the file with SIGHUP, or PUT /admin/sales/SKU, to change it)");
                }
            }
        }
        Ok(())
    }

    /// Writes `definition` if the book holds what `expected` says, and applies the book at
    /// once on this instance (the others within `store.sync_interval`).
    pub async fn write(
        &self,
        definition: &Definition,
        expected: Expected,
    ) -> Result<Written, StoreError> {
        let written = self.ctx.store.write_sale(definition, expected).await?;
        if let Written::Written { .. } = written {
            self.sync().await?;
        }
        Ok(written)
    }

    /// Applies a reloaded config file: its `[queue]` defaults to every sale, and its sales
    /// to the book (one `before` the reload did not name is ended), unless their definition
    /// came from the API since: an operator's change outranks the file, and is logged as
    /// skipped. Returns what it did, by sku.
    pub async fn reload(
        &self,
        before: &[SaleConfig],
        now: &[SaleConfig],
        queue: &QueueConfig,
    ) -> Result<Reloaded, StoreError> {
        let book = self
            .ctx
            .store
            .sale_book(u64::MAX)
            .await?
            .unwrap_or_default();
        let held: HashMap<&str, &Versioned> = book
            .sales
            .iter()
            .map(|v| (v.definition.sale.sku.as_str(), v))
            .collect();
        let mut done = Reloaded::default();
        for sale in now {
            let def = Definition {
                sale: sale.clone(),
                origin: Origin::File,
                ended: false,
            };
            let expected = match held.get(sale.sku.as_str()) {
                None => Expected::Absent,
                Some(v) if v.definition.origin == Origin::Api || v.definition.ended => {
                    done.skipped.push(sale.sku.clone());
                    continue;
                }
                Some(v) if v.definition.same_sale(&def) => continue,
                Some(v) => Expected::Version(v.version),
            };
            match self.ctx.store.write_sale(&def, expected).await? {
                Written::Written { .. } if expected == Expected::Absent => {
                    done.created.push(sale.sku.clone())
                }
                Written::Written { .. } => done.changed.push(sale.sku.clone()),
                Written::Conflict { .. } => done.skipped.push(sale.sku.clone()),
            }
        }
        for gone in before
            .iter()
            .filter(|b| !now.iter().any(|n| n.sku == b.sku))
        {
            let Some(v) = held.get(gone.sku.as_str()) else {
                continue;
            };
            if v.definition.origin != Origin::File || v.definition.ended {
                continue;
            }
            let ended = Definition {
                ended: true,
                ..v.definition.clone()
            };
            if let Written::Written { .. } = self
                .ctx
                .store
                .write_sale(&ended, Expected::Version(v.version))
                .await?
            {
                done.ended.push(gone.sku.clone());
            }
        }
        // Every sale again, under the new defaults.
        self.queue.store(Arc::new(queue.clone()));
        self.lock_applied().clear();
        self.revision.store(0, Ordering::Release);
        self.sync().await?;
        Ok(done)
    }

    /// The definition of `sku` the store holds now, with its version.
    pub async fn read(&self, sku: &str) -> Result<Option<Versioned>, StoreError> {
        let book = self
            .ctx
            .store
            .sale_book(u64::MAX)
            .await?
            .unwrap_or_default();
        Ok(book
            .sales
            .into_iter()
            .find(|v| v.definition.sale.sku == sku))
    }

    /// What `sku` runs by here, if it came from the book.
    pub fn applied(&self, sku: &Sku) -> Option<Applied> {
        self.lock_applied().get(sku).copied()
    }

    /// Reads the book if it moved since, and applies what changed; loads the stock of
    /// sales created here that could not load it before.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let _one = self.reading.lock().await;
        self.seed_now().await?;
        self.load_unloaded().await;
        let known = self.revision.load(Ordering::Acquire);
        let Some(book) = self.ctx.store.sale_book(known).await? else {
            return Ok(());
        };
        for v in &book.sales {
            self.apply(v).await;
        }
        self.revision.store(book.revision, Ordering::Release);
        Ok(())
    }

    /// Runs `sale` by definition `v`, unless it already does.
    async fn apply(&self, v: &Versioned) {
        let def = &v.definition;
        let sku = Sku::new(&def.sale.sku);
        let before = self.applied(&sku);
        if before.is_some_and(|a| a.version == v.version) {
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
        self.lock_applied().insert(sku, applied);
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
            self.lock_unloaded().push(def.sale.clone());
        }
        self.ctx.sync_controls(&sale).await;
        start_tasks(&self.ctx, &sale, &self.shutdown);
    }

    /// Loads the stock of sales created while the store did not answer.
    async fn load_unloaded(&self) {
        let pending = std::mem::take(&mut *self.lock_unloaded());
        if pending.is_empty() {
            return;
        }
        if self.ctx.load_stock(&pending).await.is_err() {
            self.lock_unloaded().extend(pending);
        }
    }

    fn lock_applied(&self) -> std::sync::MutexGuard<'_, HashMap<Sku, Applied>> {
        self.lock(&self.applied)
    }

    fn lock_unloaded(&self) -> std::sync::MutexGuard<'_, Vec<SaleConfig>> {
        self.lock(&self.unloaded)
    }

    /// Locks one of its lists: only ever changed whole, a poisoned one is still whole.
    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Gives a running `sale` the terms of `cfg`: its window, limit and queue settings at
/// once; its capacity and drain rate when the definition changed them (an operator's
/// stored setting is re-applied by the next sync).
fn redefine(sale: &Sale, cfg: &SaleConfig, q: &QueueConfig) {
    let terms = Terms::of(cfg, q);
    tracing::info!(sku = %sale.sku, "sale redefined");
    if sale.configured_capacity() != q.capacity {
        if sale.queue.set_capacity(q.capacity).is_err() {
            tracing::warn!(sku = %sale.sku, capacity = q.capacity, max = sale.queue.max_capacity(),
                "the new queue capacity is above what this instance's queue can hold; it keeps its own");
        }
        sale.set_configured_capacity(q.capacity);
    }
    if sale.configured_rate() != q.drain_rate {
        sale.set_drain_rate(q.drain_rate);
        sale.set_configured_rate(q.drain_rate);
    }
    sale.redefine(terms);
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
