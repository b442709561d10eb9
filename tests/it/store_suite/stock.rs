//! The store contract: a sale's stock, loaded, set, added to and lost.

use super::*;

/// Stock is loaded once; a second init keeps what is there; set replaces it.
pub async fn stock_init_and_set(store: Arc<dyn Store>) {
    let sku = Sku::new("stock-init");
    let StockLoad::Created { units: 10, epoch } =
        store.init_stock(&sku, 10, None).await.expect("init")
    else {
        panic!("a first load creates the stock");
    };
    assert!(!epoch.by_operator());
    assert_eq!(
        store.init_stock(&sku, 99, None).await.expect("init"),
        StockLoad::Held {
            units: 10,
            epoch: epoch.clone()
        },
        "the store's figure wins"
    );
    let loaded = store.set_stock(&sku, 7).await.expect("set");
    assert!(loaded.by_operator() && loaded != epoch);
    let now = store.stock(&sku).await.expect("stock");
    assert_eq!((now.units, now.epoch), (7, Some(loaded)));
    assert!(store.stock(&Sku::new("never-loaded")).await.is_err());
}

/// A sale this instance loaded before and the store no longer has is not loaded again.
pub async fn a_lost_sale_is_never_loaded_again(store: Arc<dyn Store>) {
    let sku = Sku::new("lost");
    let remembered = Epoch::initial();
    assert_eq!(
        store
            .init_stock(&sku, 2, Some(&remembered))
            .await
            .expect("init"),
        StockLoad::Lost
    );
    assert!(
        matches!(store.stock(&sku).await, Err(StoreError::UnknownSale(_))),
        "nothing was written"
    );
    // An operator loads it; now it is held, whatever the instance remembered.
    let loaded = store.set_stock(&sku, 1).await.expect("set");
    assert_eq!(
        store
            .init_stock(&sku, 2, Some(&remembered))
            .await
            .expect("init"),
        StockLoad::Held {
            units: 1,
            epoch: loaded
        }
    );
}

/// Stock up to 2^53 - 1 is carried exactly through every step; beyond is refused.
pub async fn largest_stock_figures_are_exact(store: Arc<dyn Store>) {
    let sku = Sku::new("huge");
    store.init_stock(&sku, 1, None).await.expect("init");
    store.set_stock(&sku, MAX_STOCK).await.expect("set");
    let alice = user("alice");
    let t = token_for(&sku, &alice);
    let reply = store
        .reserve(&req(&sku, &alice, t, 1))
        .await
        .expect("reserve");
    assert!(
        matches!(reply.outcome, Reservation::Reserved { remaining, .. } if remaining == MAX_STOCK - 1),
        "{reply:?}"
    );
    let again = store
        .reserve(&req(&sku, &alice, t, 1))
        .await
        .expect("replay");
    assert_eq!(again.outcome, reply.outcome);
    assert_eq!(store.stock(&sku).await.expect("stock").units, MAX_STOCK - 1);
    assert!(matches!(
        store.set_stock(&sku, MAX_STOCK + 1).await,
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.add_stock(&sku, 2).await,
        Err(StoreError::OutOfRange { .. })
    ));
}

/// Units are added and taken away atomically, never below 0 nor above the largest figure.
pub async fn add_stock_is_atomic_and_bounded(store: Arc<dyn Store>) {
    let sku = Sku::new("add");
    assert!(matches!(
        store.add_stock(&sku, 1).await,
        Err(StoreError::UnknownSale(_))
    ));
    store.init_stock(&sku, 3, None).await.expect("init");
    assert_eq!(store.add_stock(&sku, 5).await.expect("add"), 8);
    assert_eq!(store.add_stock(&sku, -6).await.expect("take"), 2);
    assert!(matches!(
        store.add_stock(&sku, -3).await,
        Err(StoreError::OutOfRange { units: 2 })
    ));
    // Concurrent additions and reservations lose nothing.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        let sku = sku.clone();
        set.spawn(async move {
            if i % 2 == 0 {
                store.add_stock(&sku, 1).await.expect("add");
                0
            } else {
                let u = user(&format!("u{i}"));
                let t = token_for(&sku, &u);
                match store
                    .reserve(&req(&sku, &u, t, 1))
                    .await
                    .expect("reserve")
                    .outcome
                {
                    Reservation::Reserved { .. } => 1,
                    _ => 0,
                }
            }
        });
    }
    let mut sold = 0;
    while let Some(n) = set.join_next().await {
        sold += n.expect("task");
    }
    assert_eq!(store.stock(&sku).await.expect("stock").units, 2 + 10 - sold);
}
