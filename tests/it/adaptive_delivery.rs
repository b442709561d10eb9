//! The deliverer against a backend of known capacity: an `"auto"` limit finds what the
//! backend takes without a storm of 503s, a fixed limit stays what it says, and a
//! backend's `Retry-After` holds every delivery.

use std::time::Duration;

use crate::common::capacity::{CapacityBackend, Shedding};
use crate::common::*;
use http::StatusCode;

/// A gateway in front of `backend` selling `stock` units of `desk`, drained fast (the
/// outbox is what is under test), with `delivery` keys.
async fn gateway_for(backend: &CapacityBackend, stock: u32, delivery: &str) -> flashgate::Gateway {
    let text = format!(
        "{}[queue]\ndrain_rate = 2000\nworkers = 8\nresponse = \"async\"\n\
         [limits]\nper_user_rate = 0\n\
         [delivery]\nretry_base = \"20ms\"\nretry_max = \"5s\"\nbreaker_threshold = 1000\n{delivery}\n\
         [[sale]]\nsku = \"desk\"\nstock = {stock}\n",
        config_text(&backend.url(), "")
    );
    gateway(&text).await
}

/// `n` buyers, one order each, all admitted.
async fn buy_all(gw: &flashgate::Gateway, n: u32) {
    for i in 0..n {
        let user = format!("buyer-{i}");
        let t = token_for(gw.public_addr, "desk", &user).await;
        let a = order(gw.public_addr, "desk", &user, &t).await;
        assert!(
            matches!(a.status, StatusCode::CREATED | StatusCode::ACCEPTED),
            "{user}: {:?}",
            a.json()
        );
    }
}

/// Waits until the backend took `n` orders.
async fn taken(backend: &CapacityBackend, n: usize) {
    until("the backend to take every order", || async {
        backend.ledger().taken.len() >= n
    })
    .await;
}

/// The value of an unlabelled series on `gw`'s `/metrics`.
async fn metric(gw: &flashgate::Gateway, name: &str) -> f64 {
    let text = scrape(gw.admin_addr).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// The measurement, as a test: a backend that sheds once 4 serve and 2 wait.
/// Sixteen orders at once (the old fixed default) would meet ten 503s a batch; the found
/// limit meets one now and then, where it probes above the backend's capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_limit_finds_the_backends_capacity_without_a_storm_of_503s() {
    let orders = 300;
    let backend =
        CapacityBackend::start(4, 2, Duration::from_millis(10), Shedding::default()).await;
    let gw = gateway_for(&backend, orders, "").await;
    buy_all(&gw, orders).await;
    taken(&backend, orders as usize).await;
    let l = backend.ledger();
    assert!(
        l.shed * 5 < orders as usize,
        "{} orders shed with 503 for {orders} orders",
        l.shed
    );
    let limit = metric(&gw, "flashgate_delivery_limit").await;
    assert!((1.0..=256.0).contains(&limit), "{limit}");
    assert!(metric(&gw, "flashgate_delivery_noload_seconds").await > 0.0);
    gw.shutdown();
    gw.wait().await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_limit_is_never_exceeded() {
    let orders = 60;
    let backend =
        CapacityBackend::start(64, 0, Duration::from_millis(5), Shedding::default()).await;
    let gw = gateway_for(&backend, orders, "max_in_flight = 2").await;
    buy_all(&gw, orders).await;
    taken(&backend, orders as usize).await;
    let l = backend.ledger();
    assert!(l.most_held <= 2, "the backend held {} at once", l.most_held);
    assert_eq!(metric(&gw, "flashgate_delivery_limit").await, 2.0);
    gw.shutdown();
    gw.wait().await.expect("stopped");
}

/// A 503 with `Retry-After: 1` to the first POST: no delivery at all, of that order or
/// any other, until the second has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_holds_every_delivery_for_its_duration() {
    let orders = 5;
    let shedding = Shedding {
        shed_first: 1,
        retry_after: Some(1),
        stuck: None,
    };
    let backend = CapacityBackend::start(8, 8, Duration::from_millis(1), shedding).await;
    let gw = gateway_for(&backend, orders, "max_in_flight = 1").await;
    buy_all(&gw, orders).await;
    taken(&backend, orders as usize).await;
    let l = backend.ledger();
    assert_eq!(l.shed, 1);
    let gap = l.arrivals[1].duration_since(l.arrivals[0]);
    // The gateway's clock starts the hold when the answer came, after the backend sent it.
    assert!(
        gap >= Duration::from_millis(990),
        "the next POST came {gap:?} after the 503"
    );
    assert_eq!(metric(&gw, "flashgate_delivery_holds_total").await, 1.0);
    gw.shutdown();
    gw.wait().await.expect("stopped");
}

/// Two instances on one Redis, each finding its own limit against one backend: their
/// sum stays within what the backend takes (no storm of 503s either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_find_their_shares_of_one_backend() {
    let orders = 300;
    let redis = crate::redis_server::RedisServer::start();
    let backend =
        CapacityBackend::start(4, 2, Duration::from_millis(10), Shedding::default()).await;
    let shared = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\n[cluster]\nsecret = \"adaptive-delivery-secret-0123\"\n",
        redis.url()
    );
    let a = gateway_for(&backend, orders, &shared).await;
    let b = gateway_for(&backend, orders, &shared).await;
    for i in 0..orders {
        let gw = if i % 2 == 0 { &a } else { &b };
        let user = format!("buyer-{i}");
        let t = token_for(gw.public_addr, "desk", &user).await;
        let answer = order(gw.public_addr, "desk", &user, &t).await;
        assert!(answer.status.is_success(), "{user}: {:?}", answer.json());
    }
    taken(&backend, orders as usize).await;
    let l = backend.ledger();
    assert!(
        l.shed * 5 < orders as usize,
        "{} orders shed with 503 for {orders} orders",
        l.shed
    );
    for gw in [a, b] {
        gw.shutdown();
        gw.wait().await.expect("stopped");
    }
}

/// The backend loses three quarters of its workers mid-sale, then gets them back: the
/// limit follows it down, then up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_follows_a_backend_that_shrinks_and_recovers() {
    let backend =
        CapacityBackend::start(8, 0, Duration::from_millis(40), Shedding::default()).await;
    let gw = gateway_for(&backend, 100_000, "").await;
    let public = gw.public_addr;
    // Buyers faster than the backend serves, so the outbox always holds a full batch.
    let stop = tokio_util::sync::CancellationToken::new();
    let buying = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut i = 0;
            while !stop.is_cancelled() && i < 50_000 {
                let user = format!("buyer-{i}");
                let t = token_for(public, "desk", &user).await;
                let _ = order(public, "desk", &user, &t).await;
                i += 1;
            }
        }
    });
    let limit_is = |ok: fn(f64) -> bool| {
        let gw = &gw;
        move || async move { ok(metric(gw, "flashgate_delivery_limit").await) }
    };
    until(
        "the limit to reach the backend's 8 workers",
        limit_is(|l| l >= 6.0),
    )
    .await;
    backend.set_workers(2);
    until(
        "the limit to come down to 2 workers",
        limit_is(|l| l <= 3.0),
    )
    .await;
    backend.set_workers(8);
    until("the limit to grow back", limit_is(|l| l >= 6.0)).await;
    stop.cancel();
    buying.await.expect("buyers");
    gw.shutdown();
    gw.wait().await.expect("stopped");
}

/// The outbox lag (the oldest reserved order the backend has not taken yet) grows while
/// the backend refuses, and is 0 once it took everything: in `/metrics` and the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_lag_is_the_age_of_the_oldest_order_not_delivered() {
    let up = Upstream::start().await;
    up.orders_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let gw = sale_gateway(
        &up,
        "[admin]\ntoken = \"adaptive-admin\"\n\
         [delivery]\nretry_base = \"20ms\"\nretry_max = \"50ms\"\n\
         [store]\nsync_interval = \"20ms\"\n[[sale]]\nsku = \"desk\"\nstock = 5\n",
    )
    .await;
    let t = token_for(gw.public_addr, "desk", "ann").await;
    let a = order(gw.public_addr, "desk", "ann", &t).await;
    assert!(a.status.is_success(), "{:?}", a.json());
    let lag = |gw: &flashgate::Gateway| {
        let admin = gw.admin_addr;
        async move {
            let text = scrape(admin).await;
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("flashgate_outbox_lag_seconds{sku=\"desk\"} ")?
                        .parse::<f64>()
                        .ok()
                })
                .expect("the lag is exported")
        }
    };
    until("the lag to show the order waiting", || async {
        lag(&gw).await >= 0.1
    })
    .await;
    let listed = admin_call(
        gw.admin_addr,
        "adaptive-admin",
        "GET",
        "/admin/sales",
        None,
        serde_json::Value::Null,
    )
    .await
    .json();
    assert!(
        listed["sales"][0]["outbox_lag_ms"].as_u64() >= Some(100),
        "{listed}"
    );
    up.orders_status
        .store(0, std::sync::atomic::Ordering::SeqCst);
    until("the lag to come back to 0", || async {
        lag(&gw).await == 0.0
    })
    .await;
    gw.shutdown();
    gw.wait().await.expect("stopped");
}

/// A gateway config in front of `backend` with an "auto" drain from `drain_min`, a short
/// `max_lag` and fast retries; `server` extra `[server]` keys.
fn auto_drain(backend: &CapacityBackend, drain_min: u32, server: &str) -> String {
    format!(
        "{}[admin]\ntoken = \"adaptive-admin\"\n\
         [queue]\ndrain_rate = \"auto\"\ndrain_min = {drain_min}\ndrain_max = 1000\n\
         capacity = 5000\nworkers = 8\nresponse = \"async\"\n[limits]\nper_user_rate = 0\n\
         [store]\nsync_interval = \"50ms\"\n\
         [delivery]\nmax_lag = \"500ms\"\nretry_base = \"20ms\"\nretry_max = \"100ms\"\n\
         breaker_threshold = 1000\n[[sale]]\nsku = \"desk\"\nstock = 100000\n",
        config_text(&backend.url(), server)
    )
}

/// `tasks` buyers side by side, `each` orders each, all sent before it returns: a
/// backlog that outlasts a test whatever the machine's speed.
async fn queue_buyers(gw: &flashgate::Gateway, tasks: usize, each: usize) {
    let buyers = (0..tasks).map(|k| {
        let public = gw.public_addr;
        tokio::spawn(async move {
            for i in 0..each {
                let user = format!("buyer-{k}-{i}");
                let t = token_for(public, "desk", &user).await;
                let _ = order(public, "desk", &user, &t).await;
            }
        })
    });
    for b in buyers.collect::<Vec<_>>() {
        b.await.expect("buyers");
    }
}

/// The drain rate in force, and what its last steering did, as the admin API lists them.
async fn drain_of(gw: &flashgate::Gateway) -> (u64, String) {
    let all = admin_call(
        gw.admin_addr,
        "adaptive-admin",
        "GET",
        "/admin/sales",
        None,
        serde_json::Value::Null,
    )
    .await
    .json();
    let sale = &all["sales"][0];
    let last = sale["drain_auto"]["last"].as_str().unwrap_or("").to_owned();
    (sale["drain_rate"].as_u64().unwrap_or(0), last)
}

/// `drain_rate = "auto"`: the rate climbs while the backend keeps up and buyers wait, is
/// cut when the backend slows down and delivery lags, and climbs again once it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_drain_follows_the_backend_down_and_up() {
    let backend =
        CapacityBackend::start(4, 0, Duration::from_millis(10), Shedding::default()).await;
    let gw = gateway(&auto_drain(&backend, 20, "")).await;
    queue_buyers(&gw, 4, 400).await;
    assert!(
        !drain_of(&gw).await.1.is_empty(),
        "an auto rate says what steered it"
    );
    until("the rate to climb while the backend keeps up", || async {
        drain_of(&gw).await.0 >= 60
    })
    .await;
    backend.set_workers(1);
    backend.set_service(Duration::from_millis(100));
    until("the rate to be cut as delivery lags", || async {
        drain_of(&gw).await.0 <= 30
    })
    .await;
    backend.set_workers(4);
    backend.set_service(Duration::from_millis(10));
    until("the rate to climb again", || async {
        drain_of(&gw).await.0 >= 50
    })
    .await;
    gw.shutdown();
    gw.wait().await.expect("stopped");
}

/// Two instances on one Redis with an "auto" drain: one steers for the fleet, and both
/// drain by the rate it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_drains_by_one_steered_rate() {
    let redis = crate::redis_server::RedisServer::start();
    let backend = CapacityBackend::start(8, 8, Duration::from_millis(5), Shedding::default()).await;
    let text = format!(
        "{}[admin]\ntoken = \"adaptive-admin\"\n\
         [queue]\ndrain_rate = \"auto\"\ndrain_min = 20\ndrain_max = 1000\ncapacity = 5000\n\
         workers = 8\nresponse = \"async\"\n[limits]\nper_user_rate = 0\n\
         [store]\nkind = \"redis\"\nurl = \"{}\"\nsync_interval = \"50ms\"\n\
         [cluster]\nsecret = \"adaptive-delivery-secret-0123\"\nheartbeat = \"100ms\"\n\
         [delivery]\nmax_lag = \"500ms\"\n[[sale]]\nsku = \"desk\"\nstock = 100000\n",
        config_text(&backend.url(), ""),
        redis.url()
    );
    let a = gateway(&text).await;
    let b = gateway(&text).await;
    for i in 0..600 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let user = format!("buyer-{i}");
        let t = token_for(gw.public_addr, "desk", &user).await;
        let _ = order(gw.public_addr, "desk", &user, &t).await;
    }
    until("the fleet's rate to climb", || async {
        drain_of(&a).await.0 >= 40 && drain_of(&b).await.0 >= 40
    })
    .await;
    for gw in [a, b] {
        gw.shutdown();
        gw.wait().await.expect("stopped");
    }
}

/// Adversarial review: one order the backend answers 500 forever (its fate unknown, asked
/// again and again) made the outbox's oldest order ever older, and the "auto" drain sat
/// at its minimum while the backend took every other order at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stuck_order_does_not_hold_an_auto_drain_down() {
    let shedding = Shedding {
        stuck: Some("stuck-buyer"),
        ..Shedding::default()
    };
    let backend = CapacityBackend::start(16, 16, Duration::from_millis(2), shedding).await;
    let gw = gateway(&auto_drain(&backend, 10, "shutdown_timeout = \"1s\"")).await;
    let t = token_for(gw.public_addr, "desk", "stuck-buyer").await;
    let a = order(gw.public_addr, "desk", "stuck-buyer", &t).await;
    assert!(a.status.is_success(), "{:?}", a.json());
    queue_buyers(&gw, 4, 300).await;
    until("the rate to climb past the stuck order", || async {
        drain_of(&gw).await.0 >= 60
    })
    .await;
    gw.shutdown();
    // The memory store without a data directory cannot keep the order the backend never
    // answered for sure: the stop says so.
    let kept = gw
        .wait()
        .await
        .expect_err("the stuck order is still undelivered");
    assert!(kept.to_string().contains("1 reserved orders"), "{kept}");
}
