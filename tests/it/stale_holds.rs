//! A token held by a request that is gone (a stale hold) is let go before the token is
//! queued or replayed again; when letting go fails, the buyer is told to retry, never sent
//! to the dead request's ticket.

use crate::common::*;
use crate::fleet::{admin, instance_config};
use crate::redis_server::RedisServer;
use flashgate::types::{OwnerTag, Sku, UserId};
use http::StatusCode;

/// Flake of the slot-migration test (one buyer answered 202 in wait mode, once in ~14
/// suite runs): a hold whose request was gone was taken for stale and let go, but the
/// release failed (the slot was moving), the error was ignored, and the token, held
/// again, still named the dead request: the buyer joined its ticket, which could only
/// end `ticket_lost`. The release is made to fail here for certain (the gateway's Redis
/// user may not run DEL): the buyer is told 503 `store_unavailable`, on the queueing path
/// and on the replay path alike, and nothing joins the dead ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_hold_that_cannot_be_let_go_is_a_retry_not_a_dead_ticket() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    redis.command(&[
        "ACL", "SETUSER", "gw", "on", ">gw-pass", "~*", "&*", "+@all", "-del",
    ]);
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 5\n";
    let text = instance_config(&up, &redis, "gw-a", sale).replace(
        &redis.url(),
        &redis.url().replace("redis://", "redis://gw:gw-pass@"),
    );
    let gw = gateway(&text).await;
    let (sku, user) = (Sku::new("phone"), UserId::parse("alice").expect("user"));
    let ctx = gw.context();
    let now = flashgate::types::unix_millis(std::time::SystemTime::now());
    // A request of an instance that is gone holds each token.
    let dead = OwnerTag::random();
    let mut stale = Vec::new();
    for _ in 0..2 {
        let token = ctx.tokens.issue(&sku, &user, now + 60_000);
        let ticket = ctx.tokens.new_ticket(&dead, &sku);
        let held = ctx
            .store
            .hold_token(&sku, &token, &user, &ticket, now + 60_000)
            .await
            .expect("hold");
        assert_eq!(held, flashgate::store::TokenHold::Held);
        stale.push((token.to_string(), ticket.to_string()));
    }

    // Queueing: the hold is found stale, and cannot be let go.
    let queued = order(gw.public_addr, "phone", "alice", &stale[0].0).await;
    assert_refused(
        &queued,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    // Replaying (the sale is paused: the edge would refuse, so the outcome is read first).
    admin(gw.admin_addr, "POST", "/admin/sales/phone/pause", "").await;
    let replayed = order(gw.public_addr, "phone", "alice", &stale[1].0).await;
    assert_refused(
        &replayed,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    for (token, ticket) in &stale {
        assert_eq!(
            redis.command(&["GET", &format!("flashgate:{{phone}}:hold:{token}")]),
            *ticket,
            "the stale hold is still there, and nobody joined it"
        );
    }
}
