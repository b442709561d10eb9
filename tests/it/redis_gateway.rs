//! Gateways on the Redis store: many instances sharing one Redis keep every invariant,
//! a dead Redis degrades to fast 503s and recovers by itself, and a lost reply never
//! makes a second order.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::common::*;
use crate::redis_server::RedisServer;
use flashgate::Gateway;
use http::StatusCode;
use tokio::task::JoinSet;

fn redis_config(up: &Upstream, redis: &RedisServer, sale: &str) -> String {
    format!(
        "{}[cluster]\nsecret = \"test-token-secret-0123456789\"\n[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"300ms\"\nbreaker_cooldown = \"200ms\"\nsync_interval = \"50ms\"\n\
         [queue]\ndrain_rate = 100000\nmax_wait = \"20s\"\n[limits]\nper_user_rate = 0\n{sale}",
        config_text(&up.url(), ""),
        redis.url()
    )
}

async fn redis_gateway(up: &Upstream, redis: &RedisServer, sale: &str) -> Gateway {
    gateway(&redis_config(up, redis, sale)).await
}

/// Token then order as `user` on `addr`; the order's answer (or the token refusal).
async fn buy(addr: SocketAddr, sku: &str, user: &str) -> Answer {
    let t = ask_token(addr, sku, user).await;
    if t.status != StatusCode::OK {
        return t;
    }
    let token = t.json()["token"].as_str().expect("token").to_owned();
    order(addr, sku, user, &token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_stock_and_per_user_limits() {
    const STOCK: usize = 50;
    const USERS: usize = 400;
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = format!("[[sale]]\nsku = \"phone\"\nstock = {STOCK}\n");
    // 800 buys at once on two cores: a store call may wait its turn for longer than the
    // other tests' 300 ms. This test is about sharing stock and limits, not about a slow
    // store (503 store_unavailable), so it gives the store time.
    let patient =
        redis_config(&up, &redis, &sale).replace("timeout = \"300ms\"", "timeout = \"5s\"");
    let a = gateway(&patient).await;
    let b = gateway(&patient).await;
    let (a_addr, b_addr) = (a.public_addr, b.public_addr);

    let mut set = JoinSet::new();
    for u in 0..USERS {
        // Every user tries on both instances, in either order.
        set.spawn(async move {
            let user = format!("user{u}");
            let (first, second) = if u % 2 == 0 {
                (a_addr, b_addr)
            } else {
                (b_addr, a_addr)
            };
            let x = buy(first, "phone", &user).await;
            let y = buy(second, "phone", &user).await;
            (user, [x, y])
        });
    }
    let mut per_user: HashMap<String, usize> = HashMap::new();
    let mut ids = HashSet::new();
    while let Some(r) = set.join_next().await {
        let (user, answers) = r.expect("client task");
        for ans in answers {
            match ans.status.as_u16() {
                201 => {
                    *per_user.entry(user.clone()).or_default() += 1;
                    assert!(ids.insert(ans.json()["order_id"].as_str().expect("id").to_owned()));
                }
                409 | 410 => {}
                other => panic!(
                    "{user}: unexpected {other} {:?}",
                    String::from_utf8_lossy(&ans.body)
                ),
            }
        }
    }
    assert_eq!(
        ids.len(),
        STOCK,
        "exactly the stock was reserved across both instances"
    );
    assert!(
        per_user.values().all(|&n| n == 1),
        "a user bought twice across instances"
    );
    assert_eq!(redis.command(&["GET", "flashgate:{phone}:stock"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sell_out_on_one_instance_closes_the_other() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 1\n";
    let a = redis_gateway(&up, &redis, sale).await;
    let b = redis_gateway(&up, &redis, sale).await;
    assert_eq!(
        buy(a.public_addr, "phone", "alice").await.status,
        StatusCode::CREATED
    );
    // B never served a buyer; it learns from the store that the sale is gone.
    guarded("instance B to see the sell-out", async {
        loop {
            let s = send(b.public_addr, get("/sale/phone")).await.json();
            if s["state"] == "sold_out" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let t = ask_token(b.public_addr, "phone", "bob").await;
    assert_refused(&t, StatusCode::GONE, "sold_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_sale() {
    let mut redis = RedisServer::start_persistent();
    let up = Upstream::start().await;
    let gw = redis_gateway(&up, &redis, "[[sale]]\nsku = \"phone\"\nstock = 10\n").await;
    let addr = gw.public_addr;
    assert_eq!(
        buy(addr, "phone", "before").await.status,
        StatusCode::CREATED
    );

    redis.kill();
    // Tokens are signed without the store; orders fail fast with 503; passthrough and
    // liveness keep working; not ready.
    for user in ["down1", "down2", "down3", "down4"] {
        let t = token_for(addr, "phone", user).await;
        let a = order(addr, "phone", user, &t).await;
        assert_refused(&a, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
        assert!(a.headers.contains_key("retry-after"));
    }
    assert_eq!(send(addr, get("/catalog")).await.status, StatusCode::OK);
    assert_eq!(
        send(gw.admin_addr, get("/healthz")).await.status,
        StatusCode::OK
    );
    // Reported, not unready: every instance shares the store.
    let ready = send(gw.admin_addr, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["store"], "unavailable");
    assert_eq!(ready.json()["unavailable_sales"][0], "phone");

    redis.restart();
    // Recovery needs nobody: the breaker probes, the pool reconnects.
    let a = guarded("the gateway to recover", async {
        loop {
            let a = buy(addr, "phone", "after").await;
            if a.status != StatusCode::SERVICE_UNAVAILABLE {
                return a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{:?}",
        String::from_utf8_lossy(&a.body)
    );
    let ready = send(gw.admin_addr, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["store"], "ok");
    // The reservation made before the crash survived it; nothing was taken twice.
    assert_eq!(redis.command(&["GET", "flashgate:{phone}:stock"]), "8");
    assert_eq!(redis.command(&["HLEN", "flashgate:{phone}:buyers"]), ":2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_then_the_same_token_gives_one_order() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let gw = redis_gateway(&up, &redis, "[[sale]]\nsku = \"phone\"\nstock = 5\n").await;
    let addr = gw.public_addr;
    let token = token_for(addr, "phone", "alice").await;
    // Redis holds every client for longer than the store timeout: the reserve script runs
    // after the gateway has given up on it, so its reply is lost.
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "1000", "ALL"]), "+OK");
    let a = order(addr, "phone", "alice", &token).await;
    assert_refused(&a, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    // The client retries with the same token until the store answers again.
    let retried = guarded("the retry to go through", async {
        loop {
            let a = order(addr, "phone", "alice", &token).await;
            if a.status != StatusCode::SERVICE_UNAVAILABLE {
                return a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(retried.status, StatusCode::CREATED);
    assert_eq!(
        redis.command(&["GET", "flashgate:{phone}:stock"]),
        "4",
        "one unit taken"
    );
    assert_eq!(
        redis.command(&["HGET", "flashgate:{phone}:buyers", "alice"]),
        "1"
    );
    let orders = redis.command(&[
        "EVAL",
        "return #redis.call('KEYS', 'flashgate:{phone}:order:*')",
        "0",
    ]);
    assert_eq!(orders, ":1", "one order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_stock_trips_the_oversell_guard() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let gw = redis_gateway(&up, &redis, "[[sale]]\nsku = \"phone\"\nstock = 5\n").await;
    let token = token_for(gw.public_addr, "phone", "alice").await;
    // Stock broken behind the gateway's back.
    assert_eq!(
        redis.command(&["SET", "flashgate:{phone}:stock", "-1"]),
        "+OK"
    );
    let a = order(gw.public_addr, "phone", "alice", &token).await;
    assert_refused(&a, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    let metrics =
        String::from_utf8_lossy(&send(gw.admin_addr, get("/metrics")).await.body).into_owned();
    let trips: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flashgate_oversell_guard_trips_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("guard metric");
    assert!(trips >= 1.0, "{metrics}");
    assert_eq!(
        redis.command(&["XLEN", "flashgate:{phone}:outbox"]),
        ":0",
        "nothing reserved"
    );
}

/// The store records the key layout the gateway writes, and a gateway refuses to start on
/// a store written in another layout, naming both: it would misread every key.
#[tokio::test]
async fn a_store_in_another_key_layout_is_refused_by_name() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 3\n";
    let gw = redis_gateway(&up, &redis, sale).await;
    assert_eq!(
        redis.command(&["GET", "flashgate:layout"]),
        flashgate::store::KEY_LAYOUT.to_string()
    );
    gw.shutdown();
    guarded("the gateway to stop", gw.wait())
        .await
        .expect("clean stop");

    redis.command(&["SET", "flashgate:layout", "99"]);
    let config = flashgate::Config::from_toml(&redis_config(&up, &redis, sale), "test", &[])
        .expect("valid config");
    let refused = match Gateway::start(config).await {
        Ok(_) => panic!("a gateway started on a store in key layout 99"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("key layout \"99\"")
            && refused.contains(&format!("layout {}", flashgate::store::KEY_LAYOUT)),
        "{refused}"
    );
    assert_eq!(
        redis.command(&["GET", "flashgate:{phone}:stock"]),
        "3",
        "nothing written"
    );
}
