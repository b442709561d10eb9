//! Refusals decided at the edge cost no store call (invariants 6 and 9), counted by the
//! gateway's own `flashgate_store_step_seconds_count{step}` on an instance sharing a Redis
//! (where every admitted order first holds its token in the store).

use std::net::SocketAddr;

use crate::common::*;
use crate::fleet::{admin, async_config, instance};
use crate::redis_server::RedisServer;
use http::StatusCode;
use tokio::task::JoinSet;

/// How many calls of store step `step` this instance made so far.
pub(crate) async fn store_steps(admin_addr: SocketAddr, step: &str) -> u64 {
    let text = scrape(admin_addr).await;
    value(
        &text,
        &format!("flashgate_store_step_seconds_count{{step=\"{step}\"}}"),
    )
    .unwrap_or(0.0) as u64
}

/// Tokens for `n` users `{prefix}0..`, as (user, token).
async fn tokens(addr: SocketAddr, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("{prefix}{i}");
        let token = token_for(addr, "phone", &user).await;
        out.push((user, token));
    }
    out
}

/// Sends every order at once; the answers in the same order.
async fn order_all(addr: SocketAddr, orders: &[(String, String)]) -> Vec<Answer> {
    let mut set = JoinSet::new();
    for (i, (user, token)) in orders.iter().cloned().enumerate() {
        set.spawn(async move { (i, order(addr, "phone", &user, &token).await) });
    }
    let mut answers: Vec<(usize, Answer)> = set.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

/// Attack (fleet review): capacity 10, drain held, 300 orders at the same instant: the
/// 290 refused `queue_full` had each held its token in the store and let it go again
/// (231 hold and 221 release calls), because the queue place was taken after the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_without_a_store_call() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 1000\n[sale.queue]\ncapacity = 10\n";
    let gw = gateway(&async_config(&up, &redis, "gw-a", sale)).await;
    admin(gw.admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    let orders = tokens(gw.public_addr, "u", 200).await;
    let (holds, releases) = (
        store_steps(gw.admin_addr, "hold_token").await,
        store_steps(gw.admin_addr, "release_token").await,
    );

    let answers = order_all(gw.public_addr, &orders).await;
    let queued = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .count();
    for a in answers.iter().filter(|a| a.status != StatusCode::ACCEPTED) {
        assert_refused(a, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
    }
    assert_eq!(queued, 10, "the queue's capacity");
    assert_eq!(
        (
            store_steps(gw.admin_addr, "hold_token").await - holds,
            store_steps(gw.admin_addr, "release_token").await - releases,
        ),
        (10, 0),
        "one hold per queued order, none for the 190 refused"
    );
}

/// Attack (fleet review): 30 tokens told `sold_out`, resubmitted to the same instance,
/// read the store again each time (60 calls). The first refusal of a token this instance
/// has no answer for reads its recorded outcome (invariant 6's one exception); the answer
/// is remembered, and the token's resubmission costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_this_instance_answered_is_answered_again_without_a_store_call() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 1\n";
    let gw = instance(&up, &redis, "gw-a", sale).await;
    let alice = token_for(gw.public_addr, "phone", "alice").await;
    let late = tokens(gw.public_addr, "late", 30).await;
    let won = order(gw.public_addr, "phone", "alice", &alice).await;
    assert_eq!(won.status, StatusCode::CREATED, "{:?}", won.json());
    until("the sale to be sold out", || async {
        send(gw.public_addr, get("/sale/phone")).await.json()["state"] == "sold_out"
    })
    .await;

    let first = order_all(gw.public_addr, &late).await;
    for a in &first {
        assert_refused(a, StatusCode::GONE, "sold_out");
    }
    let reads = store_steps(gw.admin_addr, "replay").await;
    assert!(reads >= 30, "each unknown token's outcome was read once");
    let holds = store_steps(gw.admin_addr, "hold_token").await;

    let again = order_all(gw.public_addr, &late).await;
    for (a, b) in first.iter().zip(&again) {
        assert_refused(b, StatusCode::GONE, "sold_out");
        assert_eq!(a.json()["ticket"], b.json()["ticket"], "the same answer");
    }
    let won_again = order(gw.public_addr, "phone", "alice", &alice).await;
    assert_eq!(won_again.json()["order_id"], won.json()["order_id"]);
    assert_eq!(
        (
            store_steps(gw.admin_addr, "replay").await - reads,
            store_steps(gw.admin_addr, "hold_token").await - holds,
        ),
        (0, 0),
        "resubmissions answered from what this instance remembers"
    );
}

/// Review finding: a reserved order's answer remembered on another instance never moved:
/// after the instance that reserved it delivered it (here: the backend refused it for
/// good, so it failed and its stock went back) the remembered ticket still said
/// `reserved`, on every instance. A remembered reserved order is read again from the store
/// when polled (at most at the ticket's poll rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_reserved_order_follows_its_delivery() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    up.orders_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 5\n[delivery]\nretry_base = \"20ms\"\nretry_max = \"100ms\"\n";
    let a = instance(&up, &redis, "gw-a", sale).await;
    let b = instance(&up, &redis, "gw-b", sale).await;
    let token = token_for(a.public_addr, "phone", "alice").await;
    let won = order(a.public_addr, "phone", "alice", &token).await;
    assert_eq!(won.status, StatusCode::CREATED, "{:?}", won.json());
    // Resubmitted on b: b reads the token's outcome and remembers it under a ticket of its own.
    let again = order(b.public_addr, "phone", "alice", &token).await;
    assert_eq!(again.json()["order_id"], won.json()["order_id"]);
    let remembered = again.json()["ticket"]
        .as_str()
        .expect("a ticket")
        .to_owned();
    let polled = send(b.public_addr, get(&format!("/sale/tickets/{remembered}"))).await;
    assert_eq!(polled.json()["status"], "reserved", "{:?}", polled.json());

    up.orders_status
        .store(400, std::sync::atomic::Ordering::SeqCst);
    until("the remembered ticket to tell the order failed", || async {
        let polled = send(b.public_addr, get(&format!("/sale/tickets/{remembered}"))).await;
        polled.json()["status"] == "failed"
    })
    .await;
}

/// Review finding: 400 tokens refused `sold_out` after the sellout were each remembered in
/// the book of tickets, which made room by forgetting its oldest finished tickets: the
/// winners', whose polls then answered 404 within seconds instead of `queue.ticket_ttl`.
/// Answers given are remembered in a book of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_refusals_never_push_a_buyers_ticket_out() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        "[limits]\nper_user_rate = 0\n[queue]\nresponse = \"async\"\nmax_tickets = 320\n[[sale]]\nsku = \"phone\"\nstock = 5\n",
    )
    .await;
    let mut winners = Vec::new();
    for i in 0..5 {
        let user = format!("w{i}");
        let token = token_for(gw.public_addr, "phone", &user).await;
        let a = order(gw.public_addr, "phone", &user, &token).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.json());
        winners.push(a.json()["ticket"].as_str().expect("ticket").to_owned());
    }
    until("the sale to sell out", || async {
        send(gw.public_addr, get("/sale/phone")).await.json()["state"] == "sold_out"
    })
    .await;
    let (sku, late) = (
        flashgate::types::Sku::new("phone"),
        flashgate::types::UserId::parse("late").expect("user"),
    );
    let expires = flashgate::types::unix_millis(std::time::SystemTime::now()) + 60_000;
    for _ in 0..400 {
        let token = gw.context().tokens.issue(&sku, &late, expires).to_string();
        assert_refused(
            &order(gw.public_addr, "phone", "late", &token).await,
            StatusCode::GONE,
            "sold_out",
        );
    }
    for ticket in &winners {
        let polled = send(gw.public_addr, get(&format!("/sale/tickets/{ticket}"))).await;
        assert_eq!(
            polled.status,
            StatusCode::OK,
            "{ticket}: {:?}",
            polled.json()
        );
    }
}
