//! What may change in a running sale's definition (the admin API and a reloaded file keep
//! the same rules), and what a reloaded config file changed in its sales.

use std::time::SystemTime;

use super::{Sale, SaleState};
use crate::config::SaleConfig;
use crate::store::Definition;

/// Why a new definition may not replace the one a sale runs by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    /// The sale was ended: it takes no new definition.
    #[error("the sale was ended")]
    Ended,
    /// A key that cannot change once the sale (or its pre-queue) has opened.
    #[error("key `{key}` cannot change once the sale (or its pre-queue) has opened")]
    Started {
        /// The key.
        key: &'static str,
    },
    /// A value this instance cannot take while the sale runs.
    #[error("key `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// Whether `next` may replace `current` on the running `sale` (if this instance runs it):
/// not once ended; the stock only as created (it changes through the stock endpoints); the
/// opening and the pre-queue only before the pre-queue (or the sale) has opened here; the
/// queue no larger than this instance's queue can hold.
pub fn check(
    current: &Definition,
    next: &SaleConfig,
    sale: Option<&Sale>,
) -> Result<(), ChangeRefused> {
    if current.ended {
        return Err(ChangeRefused::Ended);
    }
    if current.sale.stock != next.stock {
        return Err(ChangeRefused::Invalid {
            key: "stock",
            reason: format!(
                "is {} since the sale was created; change it with PUT /admin/sales/{}/stock",
                current.sale.stock, next.sku
            ),
        });
    }
    let Some(sale) = sale else {
        return Ok(());
    };
    let upcoming = sale.state(SystemTime::now()) == SaleState::Upcoming;
    let window = [
        ("starts_at", current.sale.starts_at != next.starts_at),
        ("prequeue", current.sale.prequeue != next.prequeue),
    ];
    if let Some((key, _)) = window.into_iter().find(|(_, moved)| *moved && !upcoming) {
        return Err(ChangeRefused::Started { key });
    }
    if let Some(capacity) = next.queue.capacity {
        if capacity > sale.queue.max_capacity() {
            return Err(ChangeRefused::Invalid {
                key: "queue.capacity",
                reason: format!(
                    "must be at most {} (4 × the capacity the sale started with) while it runs",
                    sale.queue.max_capacity()
                ),
            });
        }
    }
    Ok(())
}

/// What a reloaded file changed in its sales, against the file it replaces.
#[derive(Debug, Default)]
pub struct FileChanges {
    /// Sales new in the file, or defined differently.
    pub changed: Vec<SaleConfig>,
    /// Skus gone from the file.
    pub gone: Vec<String>,
}

impl FileChanges {
    /// The changes from the sales of `before` to those of `now`. A sale the file did not
    /// change is none of its business: another instance's reload, or the API, may have
    /// changed it since, and this file must not undo that.
    pub fn between(before: &[SaleConfig], now: &[SaleConfig]) -> Self {
        let same = |a: &SaleConfig, b: &SaleConfig| {
            serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
        };
        Self {
            changed: now
                .iter()
                .filter(|n| !before.iter().any(|b| b.sku == n.sku && same(b, n)))
                .cloned()
                .collect(),
            gone: before
                .iter()
                .filter(|b| !now.iter().any(|n| n.sku == b.sku))
                .map(|b| b.sku.clone())
                .collect(),
        }
    }

    /// True when the file's sales are as they were.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.gone.is_empty()
    }
}
