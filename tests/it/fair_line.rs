//! One fair line for the fleet: instances sharing a Redis serve buyers in the order the
//! fleet admitted them, whichever instance took them and however unevenly the balancer
//! spreads them, and tell each the same place and wait whichever instance answers.

use crate::common::*;
use crate::fleet::{admin, async_config};
use crate::redis_server::RedisServer;
use flashgate::Gateway;
use http::StatusCode;

/// The drain rate the line is released at.
const RATE: u32 = 50;

use crate::common::poll_ticket as poll;

/// The users in the order the store reserved their orders (the outbox stream, which keeps
/// every entry while the backend refuses deliveries with 503).
async fn reserved_order(redis: &RedisServer) -> Vec<String> {
    use redis::AsyncCommands;
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let reply: redis::streams::StreamRangeReply = c
        .xrange_all("flashgate:{phone}:outbox")
        .await
        .expect("XRANGE");
    reply
        .ids
        .iter()
        .map(|entry| entry.get::<String>("user_id").expect("user_id"))
        .collect()
}

/// `n` instances, the first taking 80 % of the buyers: every buyer's place is its place in
/// the fleet's admission order, the same on every instance; once the drain runs, buyers
/// are served in that order, within the stated tolerance.
async fn buyers_are_served_in_the_fleets_order(n: usize) {
    const BUYERS: usize = 40;
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    // The backend refuses deliveries for now: every order stays in the outbox, in the
    // order it was reserved.
    up.orders_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 1000\n";
    let mut fleet: Vec<Gateway> = Vec::new();
    for i in 0..n {
        fleet.push(gateway(&async_config(&up, &redis, &format!("gw-{i}"), sale)).await);
    }
    admin(fleet[0].admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    admin(
        fleet[0].admin_addr,
        "PUT",
        "/admin/sales/phone/drain_rate",
        &format!(r#"{{"rate": {RATE}}}"#),
    )
    .await;
    for gw in &fleet[1..] {
        until("the hold and the rate to reach every instance", || async {
            let s = admin(gw.admin_addr, "GET", "/admin/sales", "").await["sales"][0].clone();
            s["draining"] == false && s["drain_rate"] == RATE
        })
        .await;
    }

    let mut tickets = Vec::new();
    for i in 0..BUYERS {
        // 80 % to the first instance, the rest spread over the others.
        let gw = match i % 5 {
            4 => &fleet[1 + (i / 5) % (n - 1)],
            _ => &fleet[0],
        };
        let user = format!("b{i:02}");
        let token = token_for(gw.public_addr, "phone", &user).await;
        let queued = order(gw.public_addr, "phone", &user, &token).await;
        assert_eq!(queued.status, StatusCode::ACCEPTED, "{:?}", queued.json());
        let body = queued.json();
        assert_eq!(
            body["position"],
            i + 1,
            "{user}: its place in the fleet's line"
        );
        let ticket = body["ticket"].as_str().expect("ticket").to_owned();
        // The same place and wait, whichever instance answers.
        let first = poll(fleet[0].public_addr, &ticket).await;
        for other in &fleet[1..] {
            let there = poll(other.public_addr, &ticket).await;
            assert_eq!(
                (&there["position"], &there["eta_ms"]),
                (&first["position"], &first["eta_ms"]),
                "{user}"
            );
        }
        assert_eq!(first["position"], i + 1);
        assert_eq!(first["eta_ms"], (i as u64 + 1) * 1000 / u64::from(RATE));
        tickets.push((user, ticket));
    }

    admin(
        fleet[0].admin_addr,
        "POST",
        "/admin/sales/phone/release",
        "",
    )
    .await;
    until("every buyer to be served", || async {
        reserved_order(&redis).await.len() == BUYERS
    })
    .await;
    let served = reserved_order(&redis).await;
    // Admitted i, served at place s[i]: a buyer is overtaken by one admitted after it and
    // served before it. The line guarantees that only within a burst of the cursor.
    let tolerance = flashgate::store::line::burst(RATE) as usize + 1;
    let mut worst = 0;
    for (later_at, later) in served.iter().enumerate() {
        let later_admitted: usize = later[1..].parse().expect("b<i>");
        for earlier in &served[later_at + 1..] {
            let earlier_admitted: usize = earlier[1..].parse().expect("b<i>");
            if earlier_admitted < later_admitted {
                worst = worst.max(later_admitted - earlier_admitted);
            }
        }
    }
    assert!(
        worst <= tolerance,
        "a buyer was overtaken by one admitted {worst} places later (tolerance {tolerance}): {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_80_20_serve_the_fleets_line_in_order() {
    buyers_are_served_in_the_fleets_order(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_80_20_serve_the_fleets_line_in_order() {
    buyers_are_served_in_the_fleets_order(3).await;
}

/// Review finding: while the store stalled (a pause shorter than the store timeout),
/// requests that arrived one after another took their queue numbers in the order the
/// store answered their token holds, which after a stall is any order: buyers were served
/// out of their arrival order on one instance. A request takes its number on arrival, and
/// the instance releases its requests in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stall_does_not_reorder_one_instances_arrivals() {
    const BUYERS: usize = 12;
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    up.orders_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 100\n";
    let text = async_config(&up, &redis, "gw-a", sale)
        .replace("timeout = \"300ms\"", "timeout = \"5s\"")
        .replace("[limits]", "workers = 1\n[limits]");
    let gw = gateway(&text).await;
    admin(gw.admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    let mut tokens = Vec::new();
    for i in 0..BUYERS {
        let user = format!("b{i:02}");
        tokens.push((
            user.clone(),
            token_for(gw.public_addr, "phone", &user).await,
        ));
    }
    let admitted = || async {
        value(
            &scrape(gw.admin_addr).await,
            "flashgate_admission_decision_seconds_count",
        )
        .unwrap_or(0.0) as usize
    };
    redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]);
    let mut orders = tokio::task::JoinSet::new();
    for (i, (user, token)) in tokens.into_iter().enumerate() {
        let addr = gw.public_addr;
        orders.spawn(async move { order(addr, "phone", &user, &token).await });
        // The next buyer arrives once this one has been admitted (its hold is waiting
        // on the paused store).
        until("the buyer to be admitted", || async {
            admitted().await == i + 1
        })
        .await;
    }
    for a in orders.join_all().await {
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.json());
    }
    admin(gw.admin_addr, "POST", "/admin/sales/phone/release", "").await;
    until("every buyer to be served", || async {
        reserved_order(&redis).await.len() == BUYERS
    })
    .await;
    let served = reserved_order(&redis).await;
    let arrived: Vec<String> = (0..BUYERS).map(|i| format!("b{i:02}")).collect();
    assert_eq!(served, arrived, "served in arrival order");
}

/// The store lost the line (a Redis restarted empty) while requests numbered in it were
/// queued: their numbers are past anything the new line will reach for a while. They are
/// released at this instance's pace rather than wait for the new line to catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_numbered_in_a_line_the_store_lost_are_still_served() {
    let mut redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 10\n";
    let gw = gateway(&async_config(&up, &redis, "gw-a", sale)).await;
    admin(gw.admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    let mut tickets = Vec::new();
    for i in 0..3 {
        let user = format!("b{i}");
        let token = token_for(gw.public_addr, "phone", &user).await;
        let queued = order(gw.public_addr, "phone", &user, &token).await;
        assert_eq!(queued.status, StatusCode::ACCEPTED, "{:?}", queued.json());
        tickets.push(queued.json()["ticket"].as_str().expect("ticket").to_owned());
    }
    lose_the_store(&mut redis, &gw, 10).await;
    admin(gw.admin_addr, "POST", "/admin/sales/phone/release", "").await;
    for ticket in &tickets {
        until("the queued request to be decided", || async {
            poll(gw.public_addr, ticket).await["status"] != "queued"
        })
        .await;
    }
}

/// Review finding: numbers nobody holds any more (drawn by requests refused after their
/// hold, or queued on an instance that died) were passed at a burst an ask, and an instance
/// whose requests were far back asked once a second: 20,000 such numbers at 5,000/s held
/// the line for over a minute instead of 4 s. The cursor passes them at the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_nobody_holds_are_passed_at_the_rate() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 100\n";
    let gw = gateway(&async_config(&up, &redis, "gw-a", sale)).await;
    admin(
        gw.admin_addr,
        "PUT",
        "/admin/sales/phone/drain_rate",
        r#"{"rate": 5000}"#,
    )
    .await;
    // As if an instance that died had queued 20,000 requests.
    redis.command(&["HINCRBY", "flashgate:{phone}:line", "n", "20000"]);
    let mut tickets = Vec::new();
    for i in 0..5 {
        let user = format!("b{i}");
        let token = token_for(gw.public_addr, "phone", &user).await;
        let queued = order(gw.public_addr, "phone", &user, &token).await;
        assert_eq!(queued.status, StatusCode::ACCEPTED, "{:?}", queued.json());
        tickets.push(queued.json()["ticket"].as_str().expect("ticket").to_owned());
    }
    for ticket in &tickets {
        until("the queued request to be served", || async {
            poll(gw.public_addr, ticket).await["status"] != "queued"
        })
        .await;
    }
}

/// The store restarts empty under `gw`: its sale `phone` is held until an operator loads
/// `units` of stock, which this does once the hold is seen.
pub(crate) async fn lose_the_store(redis: &mut RedisServer, gw: &Gateway, units: u64) {
    redis.restart();
    until("the sale to be held: the store lost it", || async {
        send(gw.public_addr, get("/sale/phone")).await.json()["state"] == "held"
    })
    .await;
    let body = format!(r#"{{"units": {units}}}"#);
    admin(gw.admin_addr, "PUT", "/admin/sales/phone/stock", &body).await;
}
