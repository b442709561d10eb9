//! The memory store's book of sale definitions ([`BookSteps`]): this process's own, kept
//! across a graceful restart with the rest of the store.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use super::{ready, MemoryStore};
use crate::store::{Book, BookSteps, Definition, Expected, StoreFuture, Versioned, Written};
use crate::types::Sku;

/// The definitions by sku, and the book's revision (one more at every write).
#[derive(Default)]
pub(super) struct SaleBook {
    pub(super) revision: u64,
    pub(super) sales: BTreeMap<Sku, Versioned>,
}

impl BookSteps for MemoryStore {
    fn sale_book(&self, known: u64) -> StoreFuture<'_, Option<Book>> {
        let book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        ready(Ok((book.revision != known).then(|| Book {
            revision: book.revision,
            sales: book.sales.values().cloned().collect(),
        })))
    }

    fn write_sale(&self, definition: &Definition, expected: Expected) -> StoreFuture<'_, Written> {
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let sku = Sku::new(&definition.sale.sku);
        let current = book.sales.get(&sku);
        let agrees = match (expected, current) {
            (Expected::Any, _) | (Expected::Absent, None) => true,
            (Expected::Version(v), Some(c)) => c.version == v,
            (Expected::Absent, Some(_)) | (Expected::Version(_), None) => false,
        };
        if !agrees {
            return ready(Ok(Written::Conflict {
                current: current.cloned(),
            }));
        }
        let version = current.map_or(0, |c| c.version) + 1;
        book.sales.insert(
            sku,
            Versioned {
                definition: definition.clone(),
                version,
            },
        );
        book.revision += 1;
        ready(Ok(Written::Written { version }))
    }
}
