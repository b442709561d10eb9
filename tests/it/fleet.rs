//! Many gateway instances on one Redis behave as one gateway: they know each other, and a
//! sale's drain rate is their total, wherever the crowd lands.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::redis_server::RedisServer;
use flashgate::Gateway;
use http::StatusCode;
use tokio::task::JoinSet;

/// Config for instance `id` on `redis`, with the admin API on (token `adm`).
pub(crate) fn instance_config(up: &Upstream, redis: &RedisServer, id: &str, sale: &str) -> String {
    format!(
        "{}[store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"300ms\"\nbreaker_cooldown = \"200ms\"\nsync_interval = \"50ms\"\n\
         [queue]\nmax_wait = \"20s\"\n[limits]\nper_user_rate = 0\nticket_poll_rate = 0\n\
         [admin]\ntoken = \"adm\"\n[cluster]\nsecret = \"test-token-secret-0123456789\"\ninstance_id = \"{id}\"\nheartbeat = \"20ms\"\nmember_ttl = \"2s\"\n{sale}",
        config_text(&up.url(), ""),
        redis.url()
    )
}

pub(crate) async fn instance(up: &Upstream, redis: &RedisServer, id: &str, sale: &str) -> Gateway {
    gateway(&instance_config(up, redis, id, sale)).await
}

/// Config for instance `id` answering orders at once with a ticket (async mode).
pub(crate) fn async_config(up: &Upstream, redis: &RedisServer, id: &str, sale: &str) -> String {
    instance_config(up, redis, id, sale).replace(
        "max_wait = \"20s\"\n",
        "max_wait = \"20s\"\nresponse = \"async\"\n",
    )
}

/// An admin call with the admin token; the answer's JSON.
pub(crate) async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> serde_json::Value {
    let req = request(method, path, &[("authorization", "Bearer adm")], body);
    let a = send(addr, req).await;
    assert_eq!(a.status, StatusCode::OK, "{method} {path}: {:?}", a.json());
    a.json()
}

/// `GET /admin/instances` on `admin`.
pub(crate) async fn instances(admin_addr: SocketAddr) -> serde_json::Value {
    admin(admin_addr, "GET", "/admin/instances", "").await
}

pub(crate) fn ids(listing: &serde_json::Value) -> Vec<String> {
    listing["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Instances sharing a Redis announce themselves: each lists the other with the address
/// it advertises, and one that stops leaves the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_store_know_each_other() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 1\n";
    let a = instance(&up, &redis, "gw-a", sale).await;
    let b = instance(&up, &redis, "gw-b", sale).await;
    until("both instances to be listed", || async {
        ids(&instances(a.admin_addr).await) == ["gw-a", "gw-b"]
    })
    .await;
    let listing = instances(b.admin_addr).await;
    assert_eq!(listing["self"]["id"], "gw-b");
    assert_eq!(
        listing["instances"][0]["address"],
        a.admin_addr.to_string(),
        "the admin listener's address is advertised by default"
    );
    let metrics = send(a.admin_addr, get("/metrics")).await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("flashgate_instances 2"));
    b.shutdown();
    guarded("b to stop", b.wait()).await.expect("clean stop");
    // A graceful stop leaves the list at once, not after member_ttl.
    until("b to leave the list", || async {
        ids(&instances(a.admin_addr).await) == ["gw-a"]
    })
    .await;
}

/// `n` instances drain a sale at its rate together, not each: the crowd, spread over them,
/// cannot be served faster than the shared budget allows (its burst plus the rate over the
/// time taken). Each instance draining at the full rate would take 1/n of that time.
async fn instances_drain_at_one_rate_together(n: usize) {
    const RATE: u64 = 40;
    const ORDERS: u64 = 60;
    // At 40/s a lease holds one permit and the budget two.
    const BUDGET: u64 = 2;
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale =
        format!("[[sale]]\nsku = \"phone\"\nstock = 1000\n[sale.queue]\ndrain_rate = {RATE}\n");
    let mut fleet = Vec::new();
    for i in 0..n {
        fleet.push(instance(&up, &redis, &format!("gw-{i}"), &sale).await);
    }
    // Tokens first: issuing them is no part of the drain.
    let mut tokens = Vec::new();
    for u in 0..ORDERS {
        let addr = fleet[u as usize % n].public_addr;
        let user = format!("u{u}");
        tokens.push((addr, user.clone(), token_for(addr, "phone", &user).await));
    }
    let started = Instant::now();
    let mut crowd = JoinSet::new();
    for (addr, user, token) in tokens {
        crowd.spawn(async move { order(addr, "phone", &user, &token).await.status });
    }
    while let Some(status) = crowd.join_next().await {
        assert_eq!(status.expect("task"), StatusCode::CREATED);
    }
    let elapsed = started.elapsed();
    let fastest = Duration::from_millis((ORDERS - BUDGET - 1) * 1000 / RATE);
    assert!(
        elapsed >= fastest,
        "{ORDERS} orders at {RATE}/s in total through {n} instances went through in {elapsed:?} (no less than {fastest:?} allowed)"
    );
    assert_eq!(redis.command(&["GET", "flashgate:{phone}:stock"]), "940");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_drain_at_one_rate_together() {
    instances_drain_at_one_rate_together(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_drain_at_one_rate_together() {
    instances_drain_at_one_rate_together(3).await;
}

/// A drain rate set through one instance's admin API is every instance's: the other takes
/// it with its next lease, and a restarted instance keeps it over its configured rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_rate_set_on_one_instance_holds_for_all() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 10\n[sale.queue]\ndrain_rate = 500\n";
    let a = instance(&up, &redis, "gw-a", sale).await;
    let b = instance(&up, &redis, "gw-b", sale).await;
    let set = admin(
        a.admin_addr,
        "PUT",
        "/admin/sales/phone/drain_rate",
        r#"{"rate": 7}"#,
    )
    .await;
    assert_eq!(set["drain_rate"], 7);
    let rate_on = |addr| async move {
        admin(addr, "GET", "/admin/sales", "").await["sales"][0]["drain_rate"].clone()
    };
    assert_eq!(set["scope"], "fleet");
    let token = token_for(b.public_addr, "phone", "alice").await;
    let bought = order(b.public_addr, "phone", "alice", &token).await;
    assert_eq!(bought.status, StatusCode::CREATED);
    // Learnt from a lease or from the stock sync, whichever comes first.
    until("b to drain at the stored rate", || async {
        rate_on(b.admin_addr).await == 7
    })
    .await;
    assert_eq!(redis.command(&["GET", "flashgate:{phone}:drain_rate"]), "7");
    b.shutdown();
    guarded("b to stop", b.wait()).await.expect("clean stop");
    let c = instance(&up, &redis, "gw-c", sale).await;
    let token = token_for(c.public_addr, "phone", "bob").await;
    assert_eq!(
        order(c.public_addr, "phone", "bob", &token).await.status,
        StatusCode::CREATED
    );
    assert_eq!(rate_on(c.admin_addr).await, 7);
}

/// Pause, hold and capacity set through one instance's admin API are the sale's, not the
/// instance's: stored with it, applied by every instance sharing the store, and in force
/// from the first request of an instance started later. Before, each was per instance: a
/// sale "paused" on one instance went on selling through the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_hold_and_capacity_set_on_one_instance_hold_for_the_fleet() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 10\n[sale.queue]\ncapacity = 100\n";
    let a = instance(&up, &redis, "gw-a", sale).await;
    let b = instance(&up, &redis, "gw-b", sale).await;
    let sale_on =
        |addr| async move { admin(addr, "GET", "/admin/sales", "").await["sales"][0].clone() };

    let token = token_for(a.public_addr, "phone", "alice").await;
    let paused = admin(a.admin_addr, "POST", "/admin/sales/phone/pause", "").await;
    assert_eq!(
        (paused["paused"].clone(), paused["scope"].clone()),
        (true.into(), "fleet".into())
    );
    until("b to apply the pause", || async {
        sale_on(b.admin_addr).await["paused"] == true
    })
    .await;
    assert_refused(
        &order(b.public_addr, "phone", "alice", &token).await,
        StatusCode::FORBIDDEN,
        "sale_paused",
    );

    admin(a.admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    admin(
        a.admin_addr,
        "PUT",
        "/admin/sales/phone/capacity",
        r#"{"capacity": 250}"#,
    )
    .await;
    until("b to apply the hold and the capacity", || async {
        let s = sale_on(b.admin_addr).await;
        s["draining"] == false && s["capacity"] == 250
    })
    .await;

    // A capacity no instance could take is refused before it is stored.
    let too_big = send(
        a.admin_addr,
        request(
            "PUT",
            "/admin/sales/phone/capacity",
            &[("authorization", "Bearer adm")],
            r#"{"capacity": 100000}"#,
        ),
    )
    .await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);

    // An instance started now is paused, held and sized from its first request on.
    let c = instance(&up, &redis, "gw-c", sale).await;
    let first = sale_on(c.admin_addr).await;
    assert_eq!(
        (
            first["paused"].clone(),
            first["draining"].clone(),
            first["capacity"].clone()
        ),
        (true.into(), false.into(), 250.into()),
        "{first}"
    );
    assert_refused(
        &order(c.public_addr, "phone", "alice", &token).await,
        StatusCode::FORBIDDEN,
        "sale_paused",
    );

    // Resumed and released through another instance: everyone sells again.
    admin(c.admin_addr, "POST", "/admin/sales/phone/resume", "").await;
    admin(c.admin_addr, "POST", "/admin/sales/phone/release", "").await;
    until("a to apply the resume and the release", || async {
        let s = sale_on(a.admin_addr).await;
        s["paused"] == false && s["draining"] == true
    })
    .await;
    let bought = order(a.public_addr, "phone", "alice", &token).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.json());
}
