//! The store contract's book of sale definitions: versions, conditional writes, and a
//! revision that says whether anything changed.

use super::*;

use flashgate::config::SaleConfig;
use flashgate::store::{Definition, Expected, Origin, Versioned, Written};

fn definition(sku: &str, limit: u32, origin: Origin) -> Definition {
    let text = format!(
        "sku = \"{sku}\"\nstock = 7\nper_user_limit = {limit}\nstarts_at = \"2030-01-01T00:00:00Z\"\n\
         prequeue = \"10m\"\n[queue]\ncapacity = 50\n"
    );
    let sale: SaleConfig = toml::from_str(&text).expect("a sale definition");
    Definition {
        sale,
        origin,
        ended: false,
    }
}

fn written(w: Written) -> u64 {
    match w {
        Written::Written { version } => version,
        Written::Conflict { current } => panic!("conflict with {current:?}"),
    }
}

fn conflict(w: Written) -> Option<Versioned> {
    match w {
        Written::Conflict { current } => current,
        Written::Written { version } => panic!("written as {version}, expected a conflict"),
    }
}

/// Writes take one version on from what they expect, and refuse what they do not; the
/// book's revision tells whether to read it again; definitions come back whole.
pub async fn the_book_keeps_versions_and_refuses_stale_writes(store: Arc<dyn Store>) {
    let first = store.sale_book(0).await.expect("book");
    let start = first.as_ref().map_or(0, |b| b.revision);
    assert!(first.is_none_or(|b| b.sales.is_empty()));
    let a = definition("book-a", 1, Origin::File);
    let write = |d: Definition, e: Expected| {
        let store = store.clone();
        async move { store.write_sale(&d, e).await.expect("store answers") }
    };
    assert_eq!(written(write(a.clone(), Expected::Absent).await), 1);
    // A second seeding finds it there.
    let there = conflict(write(a.clone(), Expected::Absent).await).expect("current");
    assert_eq!(there.version, 1);
    let b = definition("book-a", 3, Origin::Api);
    assert_eq!(written(write(b.clone(), Expected::Version(1)).await), 2);
    // A stale version is refused, naming what the store holds.
    let stale = conflict(write(a.clone(), Expected::Version(1)).await).expect("current");
    assert_eq!(
        (stale.version, stale.definition.sale.per_user_limit),
        (2, 3)
    );
    assert!(conflict(
        write(
            definition("book-none", 1, Origin::Api),
            Expected::Version(1)
        )
        .await
    )
    .is_none());
    let mut ended = b.clone();
    ended.ended = true;
    assert_eq!(written(write(ended, Expected::Any).await), 3);
    assert_eq!(
        written(write(definition("book-b", 2, Origin::File), Expected::Absent).await),
        1
    );

    let book = store
        .sale_book(start)
        .await
        .expect("book")
        .expect("changed");
    let by_sku: HashMap<String, Versioned> = book
        .sales
        .into_iter()
        .map(|v| (v.definition.sale.sku.clone(), v))
        .collect();
    let got = &by_sku["book-a"];
    assert_eq!(got.version, 3);
    assert!(got.definition.ended);
    assert_eq!(got.definition.origin, Origin::Api);
    assert!(got.definition.same_sale(&{
        let mut e = b.clone();
        e.ended = true;
        e
    }));
    assert_eq!(got.definition.sale.queue.capacity, Some(50));
    assert_eq!(got.definition.sale.prequeue, Some(Duration::from_secs(600)));
    assert_eq!(by_sku["book-b"].version, 1);
    assert!(!by_sku.contains_key("book-none"));
    // Nothing written since: nothing to read.
    assert!(store
        .sale_book(book.revision)
        .await
        .expect("book")
        .is_none());
}
