//! The store contract, run against the in-process memory store.

use crate::store_suite;
use std::sync::Arc;
use std::time::Duration;

use flashgate::store::{
    Cancellable, Cancellation, MemoryStore, OrderState, OutboxSteps, Replay, Reservation,
    ReserveRequest, StockSteps, Store, TokenSteps, Unspent,
};
use flashgate::types::{OrderId, Sku, UserId};

store_suite!(|| ((), Arc::new(MemoryStore::new()) as Arc<dyn Store>));

/// Spent tokens are kept for replays and until they expire, then forgotten: memory stays
/// bounded by what is valid.
#[tokio::test]
async fn spent_tokens_are_forgotten_once_expired_and_past_the_replay_ttl() {
    let store = MemoryStore::with_replay_ttl(Duration::ZERO);
    let sku = Sku::new("forget");
    store.init_stock(&sku, 1_000_000, None).await.expect("init");
    for i in 0..1000 {
        let u = UserId::parse(&format!("u{i}")).expect("user");
        let req = ReserveRequest {
            sku: sku.clone(),
            token: store_suite::token_expiring(&sku, &u, 0),
            user: u,
            quantity: 1,
            per_user_limit: 1,
        };
        store.reserve(&req).await.expect("reserve");
    }
    // Each call sweeps what has expired before it, so at most the newest is left.
    assert!(store.token_count(&sku) <= 1, "{}", store.token_count(&sku));
    // One still valid outlives the (zero) replay TTL: it can never be spent twice.
    let alice = UserId::parse("alice").expect("user");
    let req = ReserveRequest {
        sku: sku.clone(),
        token: store_suite::token_for(&sku, &alice),
        user: alice,
        quantity: 1,
        per_user_limit: 1,
    };
    assert!(!store.reserve(&req).await.expect("reserve").replayed);
    assert!(store.reserve(&req).await.expect("reserve").replayed);
}

async fn reserved(store: &MemoryStore, req: &ReserveRequest) -> OrderId {
    match store.reserve(req).await.expect("reserve").outcome {
        Reservation::Reserved { order_id, .. } => order_id,
        other => panic!("expected an order, got {other:?}"),
    }
}

/// A settled order is kept as long as its token: a replay after a cancel says cancelled,
/// however short the replay TTL (never "reserved" from a record forgotten first).
#[tokio::test]
async fn an_order_outlives_its_token_under_a_shorter_replay_ttl() {
    let store = MemoryStore::with_replay_ttl(Duration::ZERO);
    let sku = Sku::new("outlive");
    store.init_stock(&sku, 5, None).await.expect("init");
    let req = store_suite::one_unit(&sku, "alice");
    let token = req.token;
    let id = reserved(&store, &req).await;
    store.confirm(&sku, &id, "").await.expect("confirm");
    let c = store
        .cancel(&sku, &id, Cancellable::Delivered)
        .await
        .expect("cancel");
    assert!(
        matches!(c, Cancellation::Cancelled { now: true, .. }),
        "{c:?}"
    );
    let replay = store
        .replay(&sku, &token, &req.user, Unspent::Leave)
        .await
        .expect("replay");
    let Replay::Spent(reply) = replay else {
        panic!("the token is spent: {replay:?}");
    };
    assert_eq!(reply.state, Some(OrderState::Cancelled));
}

/// A snapshot written before orders recorded their stock's loading: a cancel after the
/// restart restocks an order only if no operator ever loaded the stock (it cannot have
/// been reserved under an earlier loading), never on top of a figure an operator loaded.
#[tokio::test]
async fn a_snapshot_without_loadings_restocks_only_under_the_first_loading() {
    let dir = std::env::temp_dir().join(format!("flashgate-old-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (loaded, restocked, remaining) in [(false, true, 2), (true, false, 5)] {
        let store = MemoryStore::new();
        let sku = Sku::new("old");
        store.init_stock(&sku, 2, None).await.expect("init");
        let req = store_suite::one_unit(&sku, "bob");
        let id = reserved(&store, &req).await;
        if loaded {
            store.set_stock(&sku, 5).await.expect("set");
        }
        let path = dir.join("memory-store.json");
        store.save(&path).expect("save");
        // As an older version wrote it: no loadings, no settled orders.
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        for sale in json["sales"].as_array_mut().expect("sales") {
            let sale = sale.as_object_mut().expect("sale");
            sale.remove("stale");
            sale.remove("settled");
        }
        std::fs::write(&path, json.to_string()).expect("write");
        let again = MemoryStore::new();
        assert!(again.restore(&path).expect("restore"));
        again.confirm(&sku, &id, "").await.expect("confirm");
        match again
            .cancel(&sku, &id, Cancellable::Delivered)
            .await
            .expect("cancel")
        {
            Cancellation::Cancelled {
                restocked: r,
                remaining: n,
                ..
            } => {
                assert_eq!(
                    (r, n),
                    (restocked, remaining),
                    "stock loaded by an operator: {loaded}"
                )
            }
            other => panic!("expected a cancel, got {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
