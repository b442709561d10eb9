//! The Redis store's book of sale definitions ([`BookSteps`]): one hash in a slot of its
//! own (`{#sales}`), and a revision counter beside it that every write moves, so that an
//! instance asking whether anything changed reads one counter.

use redis::Value;

use super::reply::text;
use super::RedisStore;
use crate::store::{
    Book, BookSteps, Definition, Expected, StoreError, StoreFuture, Versioned, Written,
};

impl RedisStore {
    /// The book's two keys: the definitions and the revision.
    fn book_keys(&self) -> (String, String) {
        // One hash tag for both (one slot in a cluster); `#` is in no sku.
        let base = format!("{}:{{#sales}}", self.prefix);
        (format!("{base}:book"), format!("{base}:revision"))
    }
}

impl BookSteps for RedisStore {
    fn sale_book(&self, known: u64) -> StoreFuture<'_, Option<Book>> {
        let (book, revision) = self.book_keys();
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .sale_book
                        .key(book)
                        .key(revision)
                        .arg(known)
                        .invoke_async(&mut c),
                )
                .await?;
            let fields: Vec<String> = reply.iter().filter_map(text).collect();
            let Some(revision) = fields.first().and_then(|r| r.parse::<u64>().ok()) else {
                return Err(StoreError::Invariant(
                    "the sale book's revision is not a figure".into(),
                ));
            };
            if revision == known && fields.len() == 1 {
                return Ok(None);
            }
            Ok(Some(Book {
                revision,
                sales: read_book(&fields[1..]),
            }))
        })
    }

    fn write_sale(&self, definition: &Definition, expected: Expected) -> StoreFuture<'_, Written> {
        let (book, revision) = self.book_keys();
        let json = serde_json::to_string(definition);
        let sku = definition.sale.sku.clone();
        Box::pin(async move {
            let json = json.map_err(|e| StoreError::Invariant(e.to_string()))?;
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .write_sale
                        .key(book)
                        .key(revision)
                        .arg(&sku)
                        .arg(json)
                        .arg(match expected {
                            Expected::Absent => "absent".to_owned(),
                            Expected::Any => "any".to_owned(),
                            Expected::Version(v) => v.to_string(),
                        })
                        .invoke_async(&mut c),
                )
                .await?;
            let field = |i: usize| reply.get(i).and_then(text).unwrap_or_default();
            match field(0).as_str() {
                "written" => Ok(Written::Written {
                    version: field(1).parse().unwrap_or(0),
                }),
                _ => Ok(Written::Conflict {
                    current: versioned(&field(2), &field(1)),
                }),
            }
        })
    }
}

/// The definitions of a book's hash (`d:<sku>` JSON, `v:<sku>` version, in any order); one
/// that does not parse (written by a newer version, or by hand) is left out.
fn read_book(fields: &[String]) -> Vec<Versioned> {
    let mut defs = std::collections::HashMap::new();
    let mut versions = std::collections::HashMap::new();
    for pair in fields.chunks_exact(2) {
        if let Some(sku) = pair[0].strip_prefix("d:") {
            defs.insert(sku, pair[1].as_str());
        } else if let Some(sku) = pair[0].strip_prefix("v:") {
            versions.insert(sku, pair[1].as_str());
        }
    }
    defs.into_iter()
        .filter_map(|(sku, json)| versioned(json, versions.get(sku)?))
        .collect()
}

/// A definition and its version as the store holds them.
fn versioned(json: &str, version: &str) -> Option<Versioned> {
    match serde_json::from_str::<Definition>(json) {
        Ok(definition) => Some(Versioned {
            definition,
            version: version.parse().ok()?,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "a sale definition in the store does not parse; left out");
            None
        }
    }
}
