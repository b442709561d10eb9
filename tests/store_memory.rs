//! The store contract, run against the in-process memory store.

#[macro_use]
mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use flashgate::store::{MemoryStore, Store};
use flashgate::types::{Sku, UserId};

store_suite!(|| ((), Arc::new(MemoryStore::new()) as Arc<dyn Store>));

#[tokio::test]
async fn expired_tokens_are_forgotten() {
    let store = MemoryStore::with_replay_ttl(Duration::ZERO);
    let sku = Sku::new("forget");
    store.init_stock(&sku, 1_000_000, None).await.expect("init");
    let u = UserId::parse("u").expect("user");
    for _ in 0..1000 {
        store
            .issue_token(&sku, &u, Duration::ZERO)
            .await
            .expect("token");
    }
    // Each call sweeps what has expired before it, so at most the newest is left.
    assert!(store.token_count(&sku) <= 1, "{}", store.token_count(&sku));
}
