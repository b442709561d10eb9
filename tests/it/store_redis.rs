//! The store contract, run against the Redis store on a real redis-server.

use crate::store_suite;
use std::sync::Arc;
use std::time::Duration;

use crate::redis_server::RedisServer;
use flashgate::config::{StoreConfig, StoreKind};
use flashgate::store::{
    Compensation, Confirmation, FleetSteps, OutboxSteps, StockSteps, TokenSteps,
};
use flashgate::store::{RedisStore, Reservation, ReserveRequest, Store};
use flashgate::types::{Sku, UserId};

fn store_on(server: &RedisServer) -> RedisStore {
    store_keeping(server, Duration::from_secs(3600))
}

/// A store on `server` keeping settled orders and spent tokens for `replay_ttl`.
fn store_keeping(server: &RedisServer, replay_ttl: Duration) -> RedisStore {
    let cfg = StoreConfig {
        kind: StoreKind::Redis,
        url: server.url(),
        ..StoreConfig::default()
    };
    RedisStore::new(&cfg, replay_ttl).expect("pool")
}

/// Issues a token for `user` and spends it on one unit; returns the reply's outcome.
async fn reserve_one(store: &dyn Store, sku: &Sku, user: &str) -> Reservation {
    let req = store_suite::one_unit(sku, user);
    store.reserve(&req).await.expect("reserve").outcome
}

/// A store on `server` with sale `sku` of `stock` units and `orders` reserved (users u0…).
async fn sale_with_orders(
    server: &RedisServer,
    sku: &str,
    stock: u64,
    orders: usize,
) -> (RedisStore, Sku) {
    let store = store_on(server);
    let sku = Sku::new(sku);
    store.init_stock(&sku, stock, None).await.expect("init");
    for i in 0..orders {
        reserve_one(&store, &sku, &format!("u{i}")).await;
    }
    (store, sku)
}

store_suite!(|| {
    let server = RedisServer::start();
    let store: Arc<dyn Store> = Arc::new(store_on(&server));
    (server, store)
});

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    let server = RedisServer::start();
    let store = store_on(&server);
    let sku = Sku::new("noscript");
    store.init_stock(&sku, 5, None).await.expect("init");
    // The scripts are loaded and in use...
    let first = reserve_one(&store, &sku, "u1").await;
    assert!(matches!(first, Reservation::Reserved { remaining: 4, .. }));
    assert_eq!(server.command(&["SCRIPT", "FLUSH"]), "+OK");
    // ...then gone: EVALSHA answers NOSCRIPT and each script is loaded again.
    let second = reserve_one(&store, &sku, "u2").await;
    assert!(matches!(second, Reservation::Reserved { remaining: 3, .. }));
}

#[tokio::test]
async fn keys_of_a_sale_share_one_cluster_slot() {
    let server = RedisServer::start();
    let store = store_on(&server);
    let sku = Sku::new("slot");
    store.init_stock(&sku, 1, None).await.expect("init");
    reserve_one(&store, &sku, "u").await;
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
    assert!(matches!(
        store
            .init_stock(&sku, 7, None)
            .await
            .expect("init over TLS"),
        flashgate::store::StockLoad::Created { units: 7, .. }
    ));
    assert_eq!(server.command(&["GET", "flashgate:{tls}:stock"]), "7");
}

#[tokio::test]
async fn deliverers_share_the_outbox_and_take_over_a_dead_ones_orders() {
    let server = RedisServer::start();
    let (store, sku) = sale_with_orders(&server, "claim", 10, 4).await;
    let long = Duration::from_secs(3600);
    let a = store.claim(&sku, "a", 3, long).await.expect("claim").orders;
    assert_eq!(a.len(), 3);
    // b gets only what a does not hold.
    let b = store
        .claim(&sku, "b", 10, long)
        .await
        .expect("claim")
        .orders;
    assert_eq!(b.len(), 1);
    assert!(a.iter().all(|o| o.order_id != b[0].order_id));
    // a asks again: the same three (its pending ones), nothing of b's.
    let again = store
        .claim(&sku, "a", 10, long)
        .await
        .expect("claim")
        .orders;
    assert_eq!(again.len(), 3);
    // a dies; with its orders idle past the threshold, c takes them over.
    let c = store
        .claim(&sku, "c", 10, Duration::ZERO)
        .await
        .expect("claim")
        .orders;
    assert_eq!(c.len(), 4);
    // Settlement is fenced: a (alive after all) can neither renew, confirm nor compensate
    // what c owns now.
    let ids: Vec<_> = c.iter().map(|o| o.order_id).collect();
    assert!(store
        .touch(&sku, "a", &ids)
        .await
        .expect("touch")
        .is_empty());
    assert_eq!(store.touch(&sku, "c", &ids).await.expect("touch"), ids);
    assert_eq!(
        store.confirm(&sku, &ids[0], "a").await.expect("confirm"),
        Confirmation::NotOwner
    );
    assert_eq!(
        store
            .compensate(&sku, &ids[1], "a")
            .await
            .expect("compensate"),
        Compensation::NotOwner
    );
    // The owner settles them: they leave the stream and the group's pending list for good.
    for (i, id) in ids.iter().enumerate() {
        if i == 1 {
            assert!(matches!(
                store.compensate(&sku, id, "c").await.expect("compensate"),
                Compensation::Restored { .. }
            ));
        } else {
            assert_eq!(
                store.confirm(&sku, id, "c").await.expect("confirm"),
                Confirmation::Confirmed
            );
        }
    }
    assert_eq!(
        server.command(&[
            "XPENDING",
            "flashgate:{claim}:outbox",
            "flashgate-deliverers"
        ]),
        "*4",
        "XPENDING's summary is an array of four"
    );
    assert_eq!(
        pending_count(&server, "flashgate:{claim}:outbox"),
        0,
        "every entry acknowledged"
    );
    assert!(store
        .claim(&sku, "c", 10, Duration::ZERO)
        .await
        .expect("claim")
        .orders
        .is_empty());
    assert_eq!(server.command(&["XLEN", "flashgate:{claim}:outbox"]), ":0");
    // Deliverers that hold nothing and have been gone long enough (here: any time, with a
    // takeover period of 0) leave the group; the caller stays.
    assert_eq!(
        server.command(&[
            "XINFO",
            "CONSUMERS",
            "flashgate:{claim}:outbox",
            "flashgate-deliverers"
        ]),
        "*1",
        "only c is left"
    );
    // Settled orders are kept for replays, then expire.
    let ttl = server.command(&["PTTL", &format!("flashgate:{{claim}}:order:{}", ids[0])]);
    let ms: i64 = ttl.trim_start_matches(':').parse().expect("a TTL");
    assert!(ms > 0, "a settled order expires ({ttl})");
}

#[tokio::test]
async fn a_deliverer_sees_every_order_it_holds_however_many() {
    let server = RedisServer::start();
    let (store, sku) = sale_with_orders(&server, "window", 20, 10).await;
    let long = Duration::from_secs(3600);
    // Each claim reads up to 3 new orders, and every order it already holds: what the
    // deliverer remembers of an order (an acknowledgement, an ambiguous attempt) is only
    // forgotten when the order is no longer among them.
    for held in [3, 6, 9, 10] {
        let c = store.claim(&sku, "a", 3, long).await.expect("claim");
        assert_eq!((c.orders.len(), c.complete), (held, true));
    }
}

/// Defect (adversarial review): a stock figure set by hand that is not a whole number made
/// the reserve script fail, which counted as the store being down and opened the breaker
/// that every sale shares.
#[tokio::test]
async fn a_bad_figure_of_one_sale_leaves_the_other_sales_selling() {
    use flashgate::store::{GuardedStore, StoreError};
    let server = RedisServer::start();
    let inner: Arc<dyn Store> = Arc::new(store_on(&server));
    let store = GuardedStore::new(inner, Duration::from_secs(2), 1, Duration::from_secs(3600));
    let (bad, good) = (Sku::new("bad"), Sku::new("good"));
    store.init_stock(&bad, 5, None).await.expect("init");
    store.init_stock(&good, 5, None).await.expect("init");
    assert_eq!(
        server.command(&["SET", "flashgate:{bad}:stock", "12.5"]),
        "+OK"
    );
    for i in 0..3 {
        let u = UserId::parse(&format!("u{i}")).expect("user");
        let t = store_suite::token_for(&bad, &u);
        let r = store
            .reserve(&ReserveRequest {
                sku: bad.clone(),
                user: u,
                token: t,
                quantity: 1,
                per_user_limit: 1,
            })
            .await;
        assert!(matches!(r, Err(StoreError::Rejected(_))), "{r:?}");
    }
    // With a threshold of one and an hour's cool-down, an open breaker would refuse this.
    assert!(matches!(
        reserve_one(&store, &good, "alice").await,
        Reservation::Reserved { remaining: 4, .. }
    ));
}

/// A compensation when the store has lost the sale's stock (its order survived) must not
/// re-create the stock: it waits for an operator to load it.
#[tokio::test]
async fn compensation_never_recreates_lost_stock() {
    use flashgate::store::StoreError;
    let server = RedisServer::start();
    let store = store_on(&server);
    let sku = Sku::new("partial");
    store.init_stock(&sku, 3, None).await.expect("init");
    let Reservation::Reserved { order_id, .. } = reserve_one(&store, &sku, "alice").await else {
        panic!("reserved");
    };
    assert_eq!(server.command(&["DEL", "flashgate:{partial}:stock"]), ":1");
    let r = store.compensate(&sku, &order_id, "").await;
    assert!(matches!(r, Err(StoreError::UnknownSale(_))), "{r:?}");
    assert_eq!(
        server.command(&["EXISTS", "flashgate:{partial}:stock"]),
        ":0"
    );
    // Loaded again, the order is compensated onto the loaded figure.
    store.set_stock(&sku, 2).await.expect("set");
    assert_eq!(
        store
            .compensate(&sku, &order_id, "")
            .await
            .expect("compensate"),
        Compensation::Restored { remaining: 3 }
    );
}

/// A cancel for a sale whose stock the store lost changes nothing (no unit re-created, the
/// order stays confirmed); once an operator loads stock, the cancel goes through without
/// adding a unit on top of the loaded figure.
#[tokio::test]
async fn a_cancel_never_recreates_lost_stock() {
    use flashgate::store::{Cancellable, Cancellation, OrderState};
    let server = RedisServer::start();
    let store = store_on(&server);
    let sku = Sku::new("lost");
    store.init_stock(&sku, 3, None).await.expect("init");
    let Reservation::Reserved { order_id, .. } = reserve_one(&store, &sku, "alice").await else {
        panic!("reserved");
    };
    store.confirm(&sku, &order_id, "").await.expect("confirm");
    assert_eq!(server.command(&["DEL", "flashgate:{lost}:stock"]), ":1");
    let cancel = || store.cancel(&sku, &order_id, Cancellable::Delivered);
    assert_eq!(cancel().await.expect("cancel"), Cancellation::NoStock);
    assert_eq!(server.command(&["EXISTS", "flashgate:{lost}:stock"]), ":0");
    assert_eq!(
        store.order_state(&sku, &order_id).await.expect("state"),
        Some(OrderState::Confirmed)
    );
    store.set_stock(&sku, 2).await.expect("set");
    assert!(matches!(
        cancel().await.expect("cancel"),
        Cancellation::Cancelled {
            now: true,
            restocked: false,
            remaining: 2,
            ..
        }
    ));
    assert_eq!(store.stock(&sku).await.expect("stock").units, 2);
}

/// Entries in the deliverers' pending list of `stream`.
fn pending_count(server: &RedisServer, stream: &str) -> i64 {
    // The summary's first element is the count: `*4` then `:n`.
    let reply = server.command_lines(&["XPENDING", stream, "flashgate-deliverers"], 2);
    reply[1]
        .trim_start_matches(':')
        .parse()
        .expect("pending count")
}

/// Orders of a deliverer whose instance is gone from the list are taken over at once;
/// a live one's, or one touched within the idle bound, are not.
#[tokio::test]
async fn orders_of_a_gone_instance_are_taken_over_at_once() {
    let server = RedisServer::start();
    let (store, sku) = sale_with_orders(&server, "gone", 10, 3).await;
    let long = Duration::from_secs(3600);
    assert!(store
        .take_over(&sku, "b/2", &[], Duration::ZERO)
        .await
        .expect("no group yet")
        .is_empty());
    let held = store.claim(&sku, "a/1", 10, long).await.expect("claim");
    let mut ids: Vec<_> = held.orders.iter().map(|o| o.order_id).collect();
    ids.sort();
    let live = ["a/1".to_owned(), "b/2".to_owned()];
    assert!(store
        .take_over(&sku, "b/2", &live, Duration::ZERO)
        .await
        .expect("take over")
        .is_empty());
    // Gone, but touched within the bound: still a's.
    assert!(store
        .take_over(&sku, "b/2", &live[1..], long)
        .await
        .expect("take over")
        .is_empty());
    let mut taken = store
        .take_over(&sku, "b/2", &live[1..], Duration::ZERO)
        .await
        .expect("take over");
    taken.sort();
    assert_eq!(taken, ids);
    // b reads them as its own; a can no longer settle them.
    assert_eq!(
        store
            .claim(&sku, "b/2", 10, long)
            .await
            .expect("claim")
            .orders
            .len(),
        3
    );
    assert_eq!(
        store.confirm(&sku, &ids[0], "a/1").await.expect("confirm"),
        Confirmation::NotOwner
    );
}

/// A spent token is kept until it expires even when the replay TTL is shorter: it can
/// never be spent twice.
#[tokio::test]
async fn a_spent_token_outlives_a_shorter_replay_ttl() {
    let server = RedisServer::start();
    let store = store_keeping(&server, Duration::from_millis(1));
    let sku = Sku::new("outlive");
    store.init_stock(&sku, 5, None).await.expect("init");
    let req = store_suite::one_unit(&sku, "alice");
    let token = req.token;
    assert!(!store.reserve(&req).await.expect("reserve").replayed);
    let ttl: i64 = server
        .command(&["PTTL", &format!("flashgate:{{outlive}}:tok:{token}")])
        .trim_start_matches(':')
        .parse()
        .expect("a TTL");
    assert!(ttl > 60_000, "kept {ttl} ms, less than the token's life");
}

/// A settled order is kept as long as its token: a replay after a cancel finds what became
/// of the order however short the replay TTL (never "reserved" from a record gone first),
/// and a cancelled order of the stream is not kept forever.
#[tokio::test]
async fn an_order_outlives_its_token_under_a_shorter_replay_ttl() {
    use flashgate::store::{Cancellable, OutboxSteps};
    let server = RedisServer::start();
    let store = store_keeping(&server, Duration::from_millis(1));
    let sku = Sku::new("kept");
    store.init_stock(&sku, 5, None).await.expect("init");
    let pttl = |id: &flashgate::types::OrderId| -> i64 {
        server
            .command(&["PTTL", &format!("flashgate:{{kept}}:order:{id}")])
            .trim_start_matches(':')
            .parse()
            .expect("a TTL")
    };
    let Reservation::Reserved { order_id: a, .. } = reserve_one(&store, &sku, "alice").await else {
        panic!("reserved");
    };
    store.confirm(&sku, &a, "").await.expect("confirm");
    assert!(pttl(&a) > 60_000, "confirmed order kept {} ms", pttl(&a));
    store
        .cancel(&sku, &a, Cancellable::Delivered)
        .await
        .expect("cancel");
    assert!(pttl(&a) > 60_000, "cancelled order kept {} ms", pttl(&a));
    let Reservation::Reserved { order_id: b, .. } = reserve_one(&store, &sku, "bob").await else {
        panic!("reserved");
    };
    store
        .cancel(&sku, &b, Cancellable::Reserved)
        .await
        .expect("cancel");
    let kept = pttl(&b);
    assert!(
        kept > 60_000,
        "a cancelled stream order kept {kept} ms (-1: forever)"
    );
    let Reservation::Reserved { order_id: c, .. } = reserve_one(&store, &sku, "carol").await else {
        panic!("reserved");
    };
    store.compensate(&sku, &c, "").await.expect("compensate");
    assert!(pttl(&c) > 60_000, "compensated order kept {} ms", pttl(&c));
}

/// Orders reserved before orders recorded their stock's epoch (an older version): a cancel
/// restocks one only while the stock is the one the gateway first loaded (no operator load
/// since, so none can have come between), never on top of a figure an operator loaded.
#[tokio::test]
async fn a_cancel_of_an_order_without_its_epoch_restocks_only_under_the_first_loading() {
    use flashgate::store::{Cancellable, Cancellation};
    let server = RedisServer::start();
    let store = store_on(&server);
    let sku = Sku::new("old");
    store.init_stock(&sku, 3, None).await.expect("init");
    let mut ids = Vec::new();
    for user in ["alice", "bob"] {
        let Reservation::Reserved { order_id, .. } = reserve_one(&store, &sku, user).await else {
            panic!("reserved");
        };
        store.confirm(&sku, &order_id, "").await.expect("confirm");
        let key = format!("flashgate:{{old}}:order:{order_id}");
        assert_eq!(server.command(&["HDEL", &key, "e"]), ":1");
        ids.push(order_id);
    }
    let cancel = |id| store.cancel(&sku, id, Cancellable::Delivered);
    assert!(matches!(
        cancel(&ids[0]).await.expect("cancel"),
        Cancellation::Cancelled {
            restocked: true,
            remaining: 2,
            ..
        }
    ));
    store.set_stock(&sku, 5).await.expect("set");
    assert!(matches!(
        cancel(&ids[1]).await.expect("cancel"),
        Cancellation::Cancelled {
            restocked: false,
            remaining: 5,
            ..
        }
    ));
}

/// Load-test finding: after a Redis restart the gateway answered `store_unavailable` for
/// the rest of the sale. A restart drops the cached connections, and every call that then
/// found the cache empty took pooled connections one by one until it had all of them:
/// many calls at once each held a few and waited for the rest until the pool's wait
/// timed out, again and again. One refill at a time now, which outlives its caller.
#[tokio::test]
async fn a_crowd_of_calls_on_no_connections_all_connect() {
    let mut server = RedisServer::start();
    let cfg = StoreConfig {
        kind: StoreKind::Redis,
        url: server.url(),
        // Generous: only a deadlock could use it up.
        timeout: Duration::from_secs(5),
        ..StoreConfig::default()
    };
    let store = Arc::new(RedisStore::new(&cfg, Duration::from_secs(3600)).expect("pool"));
    // Every call started before any finishes.
    let crowd = |n: usize| {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..n {
            let store = store.clone();
            calls.spawn(async move { store.ping().await.map_err(|e| e.to_string()) });
        }
        async move {
            let mut failed = (0, None);
            while let Some(result) = calls.join_next().await {
                if let Err(e) = result.expect("the call ran") {
                    failed = (failed.0 + 1, Some(e));
                }
            }
            failed
        }
    };
    // A fresh store has no connections yet.
    assert_eq!(
        crowd(64).await,
        (0, None),
        "first crowd: (failed, the last error)"
    );
    server.restart();
    // The first call after the restart finds the connections broken and drops them (or,
    // if Redis noticed first, reconnects): either way the next crowd meets no connection
    // it can use.
    let _ = store.ping().await;
    assert_eq!(crowd(64).await, (0, None), "after the restart");
}

/// Review finding: a Redis at its client limit (`maxclients`) with room for fewer
/// connections than the pool's size refused the rest, and the refill threw away those it
/// had got: every call answered store_unavailable while connections were to be had.
#[tokio::test]
async fn a_redis_with_room_for_fewer_connections_than_the_pool_is_used() {
    let server = RedisServer::start();
    // Room for 4 (the pool asks for 8; the command's own connection is gone by then).
    assert_eq!(server.command(&["CONFIG", "SET", "maxclients", "4"]), "+OK");
    let store = store_on(&server);
    let sku = Sku::new("few");
    store
        .init_stock(&sku, 2, None)
        .await
        .expect("init over what Redis gave");
    assert!(matches!(
        reserve_one(&store, &sku, "u1").await,
        Reservation::Reserved { remaining: 1, .. }
    ));
}
