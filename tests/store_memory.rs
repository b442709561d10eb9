//! The store contract, run against the in-process memory store.

mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use flashgate::store::{MemoryStore, Store};
use flashgate::types::{Sku, UserId};

fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                store_suite::$name(store()).await;
            }
        )*
    };
}

suite!(
    stock_init_and_set,
    token_buys_once_and_replays,
    foreign_tokens_are_invalid,
    expired_tokens_are_invalid,
    per_user_limit_holds,
    no_oversell_when_sold_out,
    outbox_holds_orders_until_confirmed,
    compensation_restores_once,
    concurrent_crowd_never_oversells,
);

#[tokio::test]
async fn expired_tokens_are_forgotten() {
    let store = MemoryStore::with_replay_ttl(Duration::ZERO);
    let sku = Sku::new("forget");
    store.init_stock(&sku, 1_000_000).await.expect("init");
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
