//! The store contract, run against the in-process memory store.

use crate::store_suite;
use std::sync::Arc;
use std::time::Duration;

use flashgate::store::{MemoryStore, ReserveRequest, StockSteps, Store, TokenSteps};
use flashgate::types::{Sku, UserId};

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
