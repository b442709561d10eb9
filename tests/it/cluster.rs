//! Gateways on a real Redis Cluster (three masters started here): every sale's keys live
//! in one slot, sales on different masters sell side by side, and a dead master stops only
//! its own sales.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::common::*;
use flashgate::config::{StoreConfig, StoreKind};
use flashgate::store::{RedisStore, StockSteps, Store};
use flashgate::types::Sku;
use flashgate::Gateway;
use flashgate_support::RedisCluster;
use http::StatusCode;
use tokio::task::JoinSet;

/// Three skus, one on each master, in node order.
fn skus_on_each_master(cluster: &RedisCluster) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; cluster.nodes.len()];
    for i in 0..1000 {
        let sku = format!("s{i}");
        let node = cluster.node_of_slot(cluster.slot_of(&sku).expect("slot"));
        found[node].get_or_insert(sku);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
        .into_iter()
        .map(|s| s.expect("a sku per master"))
        .collect()
}

fn config(up: &Upstream, cluster: &RedisCluster, id: &str, skus: &[String], stock: u64) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let sales: String = skus
        .iter()
        .map(|s| format!("[[sale]]\nsku = \"{s}\"\nstock = {stock}\n"))
        .collect();
    format!(
        "{}[cluster]\nsecret = \"test-token-secret-0123456789\"\ninstance_id = \"{id}\"\nheartbeat = \"50ms\"\nmember_ttl = \"1s\"\n\
         [store]\nkind = \"redis-cluster\"\nurls = [{}]\ntimeout = \"300ms\"\nbreaker_cooldown = \"200ms\"\nsync_interval = \"50ms\"\n\
         [queue]\nmax_wait = \"20s\"\n[limits]\nper_user_rate = 0\n[admin]\ntoken = \"adm\"\n{sales}",
        config_text(&up.url(), ""),
        urls.join(", ")
    )
}

async fn buy(addr: SocketAddr, sku: &str, user: &str) -> Answer {
    let t = ask_token(addr, sku, user).await;
    if t.status != StatusCode::OK {
        return t;
    }
    let token = t.json()["token"].as_str().expect("token").to_owned();
    order(addr, sku, user, &token).await
}

/// A key's value, read on the node that serves it.
fn value(cluster: &RedisCluster, sku: &str, key: &str) -> String {
    let node = cluster.node_of_slot(cluster.slot_of(sku).expect("slot"));
    cluster.nodes[node].command(&["GET", key]).expect("GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_on_three_masters_sell_and_a_dead_master_stops_only_its_own() {
    const STOCK: u64 = 30;
    const USERS: usize = 20;
    let cluster = RedisCluster::start(3, std::path::Path::new("redis-server")).expect("cluster");
    let up = Upstream::start().await;
    let skus = skus_on_each_master(&cluster);
    let a: Gateway = gateway(&config(&up, &cluster, "gw-a", &skus, STOCK)).await;
    let b: Gateway = gateway(&config(&up, &cluster, "gw-b", &skus, STOCK)).await;
    let addrs = [a.public_addr, b.public_addr];
    until("the stock to be loaded on every master", || async {
        skus.iter()
            .all(|s| value(&cluster, s, &format!("flashgate:{{{s}}}:stock")) == STOCK.to_string())
    })
    .await;

    // A crowd spread over both instances buys in every sale at once; each user tries
    // twice (once on each instance).
    let mut crowd = JoinSet::new();
    for sku in &skus {
        for u in 0..USERS {
            let sku = sku.clone();
            crowd.spawn(async move {
                let user = format!("u{u}");
                let first = buy(addrs[u % 2], &sku, &user).await.status;
                let second = buy(addrs[(u + 1) % 2], &sku, &user).await.status;
                (sku, first, second)
            });
        }
    }
    let mut reserved: HashMap<String, u64> = HashMap::new();
    while let Some(r) = crowd.join_next().await {
        let (sku, first, second) = r.expect("task");
        for status in [first, second] {
            assert!(
                matches!(status.as_u16(), 201 | 409 | 410),
                "{sku}: {status}"
            );
            if status == StatusCode::CREATED {
                *reserved.entry(sku.clone()).or_default() += 1;
            }
        }
    }
    for sku in &skus {
        // One unit a user, whichever instance they reached, and never more than the stock.
        assert_eq!(reserved.get(sku).copied(), Some(USERS as u64), "{sku}");
        assert_eq!(
            value(&cluster, sku, &format!("flashgate:{{{sku}}}:stock")),
            (STOCK - USERS as u64).to_string(),
            "{sku}"
        );
    }

    // The third sale's master dies: its sale answers 503, the others sell on.
    let dead = &skus[2];
    cluster.nodes[2].kill();
    until("the dead master's sale to refuse", || async {
        let a = buy(addrs[0], dead, "late-dead").await;
        a.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_refused(
        &buy(addrs[1], dead, "later-dead").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    for (i, sku) in skus[..2].iter().enumerate() {
        let a = buy(addrs[i % 2], sku, "after-the-death").await;
        assert_eq!(a.status, StatusCode::CREATED, "{sku}: {:?}", a.json());
    }
    // Readiness says which sale cannot sell, and stays ready for the others.
    let ready = send(a.admin_addr, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.json());
    assert_eq!(ready.json()["store"], "partial");
    assert_eq!(ready.json()["unavailable_sales"][0], dead.as_str());
}

/// The store config of a gateway on `cluster`, calls bounded by `timeout`.
fn cluster_store(cluster: &RedisCluster, timeout: std::time::Duration) -> StoreConfig {
    StoreConfig {
        kind: StoreKind::RedisCluster,
        urls: cluster.urls(),
        timeout,
        ..StoreConfig::default()
    }
}

/// Loads `units` of stock for every sale in `skus`.
async fn load_each(store: &dyn Store, skus: &[String], units: u64) {
    for sku in skus {
        store
            .init_stock(&Sku::new(sku), units, None)
            .await
            .expect("init");
    }
}

/// The store's breaker is per sale: with a threshold of one and an hour's cool-down, a
/// shared breaker opened by the dead master's sale would refuse every other sale's calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_masters_failures_open_only_its_sales_breaker() {
    use flashgate::store::GuardedStore;
    use std::sync::Arc;
    use std::time::Duration;
    let cluster = RedisCluster::start(3, std::path::Path::new("redis-server")).expect("cluster");
    let skus = skus_on_each_master(&cluster);
    let cfg = cluster_store(&cluster, Duration::from_millis(500));
    let inner: Arc<dyn Store> =
        Arc::new(RedisStore::new(&cfg, Duration::from_secs(60)).expect("store"));
    let store = GuardedStore::new(inner, Duration::from_secs(2), 1, Duration::from_secs(3600));
    load_each(&store, &skus, 5).await;
    cluster.nodes[2].kill();
    let dead = Sku::new(&skus[2]);
    assert!(store.stock(&dead).await.is_err(), "its master is dead");
    assert!(store.stock(&dead).await.is_err(), "and its breaker open");
    for sku in &skus[..2] {
        let reading = store
            .stock(&Sku::new(sku))
            .await
            .expect("the live masters answer");
        assert_eq!(reading.units, 5, "{sku}");
    }
}

/// Review finding: a master that stops answering (paused, swapping, stuck in a slow
/// command) without refusing connections stopped every sale. A call timing out on it
/// dropped the one cluster connection every sale shares, and connecting again meant
/// reaching every node, the silent one too. The sales on the other masters must go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_master_stops_only_its_own_sales() {
    use flashgate::store::StoreError;
    use std::time::Duration;
    let cluster = RedisCluster::start(3, std::path::Path::new("redis-server")).expect("cluster");
    let skus = skus_on_each_master(&cluster);
    let cfg = cluster_store(&cluster, Duration::from_millis(300));
    let store = RedisStore::new(&cfg, Duration::from_secs(60)).expect("store");
    load_each(&store, &skus, 5).await;
    cluster.nodes[2]
        .signal("-STOP")
        .expect("pause the third master");
    let silent = Sku::new(&skus[2]);
    assert!(store.stock(&silent).await.is_err(), "its master is silent");
    let mut readings = Vec::new();
    for sku in &skus[..2] {
        readings.push(store.stock(&Sku::new(sku)).await.map(|r| r.units));
    }
    // Second review finding: a gateway that starts while a master is silent served no
    // sale at all: opening the cluster connection was bounded by the same time as one
    // node's connect, which the silent node always used up. The live masters' sales
    // answer once it is open (its callers time out meanwhile: the opening goes on).
    let fresh = RedisStore::new(&cfg, Duration::from_secs(60)).expect("store");
    for sku in &skus[..2] {
        until(
            "a store opened beside a silent master to answer",
            || async { fresh.stock(&Sku::new(sku)).await.is_ok() },
        )
        .await;
    }
    cluster.nodes[2].signal("-CONT").expect("resume it");
    for (sku, reading) in skus.iter().zip(readings) {
        assert_eq!(reading.map_err(|e| e.to_string()), Ok(5), "{sku}");
    }
    // The connection mends itself: once the master answers again, so does its sale...
    until("the resumed master's sale to answer", || async {
        store.stock(&silent).await.is_ok()
    })
    .await;
    // ...and once a master that died is back (empty: no persistence here).
    cluster.nodes[2].kill();
    assert!(store.stock(&silent).await.is_err(), "its master is dead");
    cluster.nodes[2].start().expect("the master restarts");
    until("the restarted master to answer", || async {
        !matches!(store.stock(&silent).await, Err(StoreError::Unavailable(_)))
    })
    .await;
}

/// A sale's slot moved to another master while a crowd buys (as `redis-cli --cluster
/// reshard` moves it): calls follow the move (some answered 503 meanwhile, and retried),
/// and nothing is lost or taken twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sales_slot_migrated_while_it_sells_loses_and_doubles_nothing() {
    const STOCK: u64 = 150;
    const USERS: usize = 200;
    let cluster = std::sync::Arc::new(
        RedisCluster::start(3, std::path::Path::new("redis-server")).expect("cluster"),
    );
    let up = Upstream::start().await;
    let skus = skus_on_each_master(&cluster);
    let sku = skus[0].clone();
    let slot = cluster.slot_of(&sku).expect("slot");
    let a = gateway(&config(&up, &cluster, "gw-a", &skus[..1], STOCK)).await;
    let b = gateway(&config(&up, &cluster, "gw-b", &skus[..1], STOCK)).await;
    let addrs = [a.public_addr, b.public_addr];
    let stock_key = format!("flashgate:{{{sku}}}:stock");
    until("the stock to be loaded", || async {
        cluster.nodes[0].command(&["GET", &stock_key]).expect("GET") == STOCK.to_string()
    })
    .await;

    let mut crowd = JoinSet::new();
    for u in 0..USERS {
        let sku = sku.clone();
        crowd.spawn(async move {
            let user = format!("u{u}");
            let token = token_for(addrs[u % 2], &sku, &user).await;
            // A 503 is retried with the same token, on the other instance.
            for attempt in 0usize.. {
                let a = order(addrs[(u + attempt) % 2], &sku, &user, &token).await;
                if a.status != StatusCode::SERVICE_UNAVAILABLE {
                    return (
                        user,
                        a.status,
                        a.json()["order_id"].as_str().map(str::to_owned),
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            unreachable!()
        });
    }
    let mover = cluster.clone();
    let migrated = tokio::task::spawn_blocking(move || mover.migrate_slot(slot, 0, 1));
    let mut orders = std::collections::HashSet::new();
    let mut sold_out = 0;
    // Bounded: a gateway that never gets past the move must fail the test, not hang it.
    guarded("the crowd to be answered", async {
        while let Some(r) = crowd.join_next().await {
            let (user, status, order_id) = r.expect("task");
            match status {
                StatusCode::CREATED => assert!(
                    orders.insert(order_id.expect("an order id")),
                    "{user}: an order id given twice"
                ),
                StatusCode::GONE => sold_out += 1,
                other => panic!("{user}: {other}"),
            }
        }
    })
    .await;
    migrated.await.expect("join").expect("the slot moved");
    assert_eq!(orders.len() as u64, STOCK, "every unit sold once");
    assert_eq!(sold_out, USERS - STOCK as usize);
    // The sale's keys live on the new master now, and agree with what was answered.
    let new = &cluster.nodes[1];
    assert_eq!(new.command(&["GET", &stock_key]).expect("GET"), "0");
    assert_eq!(
        new.command(&["HLEN", &format!("flashgate:{{{sku}}}:buyers")])
            .expect("HLEN"),
        format!(":{STOCK}")
    );
    assert!(cluster.nodes[0]
        .command(&["GET", &stock_key])
        .expect("GET")
        .starts_with("-MOVED"));
}
