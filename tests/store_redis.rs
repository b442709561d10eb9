//! The store contract, run against the Redis store on a real redis-server.

mod redis_server;
mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use flashgate::config::{StoreConfig, StoreKind};
use flashgate::store::{RedisStore, Reservation, ReserveRequest, Store};
use flashgate::types::{Sku, UserId};
use redis_server::RedisServer;

fn store_on(server: &RedisServer) -> RedisStore {
    let cfg = StoreConfig {
        kind: StoreKind::Redis,
        url: server.url(),
        ..StoreConfig::default()
    };
    RedisStore::new(&cfg, Duration::from_secs(3600)).expect("pool")
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let server = RedisServer::start();
                let store: Arc<dyn Store> = Arc::new(store_on(&server));
                store_suite::$name(store).await;
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
async fn scripts_are_reloaded_after_script_flush() {
    let server = RedisServer::start();
    let store = store_on(&server);
    let sku = Sku::new("noscript");
    store.init_stock(&sku, 5).await.expect("init");
    let u = UserId::parse("u").expect("user");
    let t = store
        .issue_token(&sku, &u, Duration::from_secs(60))
        .await
        .expect("token");
    assert_eq!(server.command(&["SCRIPT", "FLUSH"]), "+OK");
    let req = ReserveRequest {
        sku: sku.clone(),
        user: u,
        token: t,
        quantity: 1,
        per_user_limit: 1,
    };
    let reply = store
        .reserve(&req)
        .await
        .expect("reserve after SCRIPT FLUSH");
    assert!(matches!(
        reply.outcome,
        Reservation::Reserved { remaining: 4, .. }
    ));
}

#[tokio::test]
async fn keys_of_a_sale_share_one_cluster_slot() {
    let server = RedisServer::start();
    let store = store_on(&server);
    let sku = Sku::new("slot");
    store.init_stock(&sku, 1).await.expect("init");
    let u = UserId::parse("u").expect("user");
    let t = store
        .issue_token(&sku, &u, Duration::from_secs(60))
        .await
        .expect("token");
    let req = ReserveRequest {
        sku: sku.clone(),
        user: u,
        token: t,
        quantity: 1,
        per_user_limit: 1,
    };
    store.reserve(&req).await.expect("reserve");
    // Every key of the sale carries the {sku} hash tag.
    let count = server.command(&["EVAL", "return #redis.call('KEYS', '*')", "0"]);
    let tagged = server.command(&[
        "EVAL",
        "return #redis.call('KEYS', 'flashgate:{slot}:*')",
        "0",
    ]);
    assert_eq!(count, tagged);
    assert_ne!(count, ":0");
}

#[tokio::test]
async fn rediss_urls_speak_tls() {
    let server = RedisServer::start_tls();
    let tls_port = server.tls_port.expect("tls port");
    // The test certificate is self-signed: `#insecure` skips verification (tests only;
    // production URLs are verified against the system's roots).
    let cfg = StoreConfig {
        kind: StoreKind::Redis,
        url: format!("rediss://127.0.0.1:{tls_port}/#insecure"),
        ..StoreConfig::default()
    };
    let store = RedisStore::new(&cfg, Duration::from_secs(60)).expect("pool");
    let sku = Sku::new("tls");
    assert_eq!(store.init_stock(&sku, 7).await.expect("init over TLS"), 7);
    assert_eq!(server.command(&["GET", "flashgate:{tls}:stock"]), "7");
}
