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
