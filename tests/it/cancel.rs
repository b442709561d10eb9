//! Unpaid orders handed back: `POST /admin/orders/{id}/cancel` returns an order's unit to
//! the sale and its buyer's allowance, once however often it is called — through one
//! instance or another, and across a restart — and refuses what it must not undo.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use crate::common::*;
use crate::redis_server::RedisServer;
use http::StatusCode;

const ADMIN: &str = "cancel-admin-token";

/// `[server]` lines, then the sale (2 units, one a buyer), fast retries, the admin token.
fn sale_config(up: &Upstream, server: &str, rest: &str) -> String {
    format!(
        "{}[admin]\ntoken = \"{ADMIN}\"\n[[sale]]\nsku = \"phone\"\nstock = 2\nper_user_limit = 1\n\
         [delivery]\nretry_base = \"10ms\"\nretry_max = \"50ms\"\nbreaker_cooldown = \"50ms\"\n{rest}",
        config_text(&up.url(), server)
    )
}

/// `POST /admin/orders/{order}/cancel` on `admin` with the admin token (or none).
async fn cancel(admin: SocketAddr, order: &str, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    let path = format!("/admin/orders/{order}/cancel");
    send(admin, request("POST", &path, &headers, "")).await
}

/// A cancel that went through: its JSON.
async fn cancelled(admin: SocketAddr, order: &str) -> serde_json::Value {
    let a = cancel(admin, order, Some(ADMIN)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    a.json()
}

/// Buys one unit as `user` on `addr` (wait mode): (token, order id, ticket).
async fn buy(addr: SocketAddr, user: &str) -> (String, String, String) {
    let token = token_for(addr, "phone", user).await;
    let a = order(addr, "phone", user, &token).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.json());
    let v = a.json();
    let field = |k: &str| v[k].as_str().expect("field").to_owned();
    (token, field("order_id"), field("ticket"))
}

/// Waits until `ticket` on `addr` reports `status`.
async fn until_ticket(addr: SocketAddr, ticket: &str, status: &str) {
    until(&format!("ticket {ticket} to be {status}"), || async {
        poll_ticket(addr, ticket).await["status"] == status
    })
    .await;
}

async fn remaining(addr: SocketAddr) -> serde_json::Value {
    send(addr, get("/sale/phone")).await.json()["remaining"].clone()
}

#[tokio::test]
async fn a_cancelled_order_hands_its_unit_and_allowance_back_once() {
    let up = Upstream::start().await;
    let gw = gateway(&sale_config(&up, "", "")).await;
    let (public, admin) = (gw.public_addr, gw.admin_addr);
    let (token, id, ticket) = buy(public, "alice").await;
    until_ticket(public, &ticket, "confirmed").await;
    assert_eq!(remaining(public).await, 1);

    assert_refused(
        &cancel(admin, &id, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let bad = cancel(admin, "not-an-order", Some(ADMIN)).await;
    assert_refused(&bad, StatusCode::BAD_REQUEST, "bad_request");
    let unknown = cancel(admin, &"0".repeat(32), Some(ADMIN)).await;
    assert_refused(&unknown, StatusCode::NOT_FOUND, "unknown_order");

    let first = cancelled(admin, &id).await;
    assert_eq!(
        (
            &first["status"],
            &first["restocked"],
            &first["already_cancelled"]
        ),
        (&"cancelled".into(), &true.into(), &false.into())
    );
    assert_eq!(
        (&first["user_id"], &first["quantity"]),
        (&"alice".into(), &1.into())
    );
    assert_eq!(remaining(public).await, 2);
    // Asked again: the same answer, nothing changed.
    let again = cancelled(admin, &id).await;
    assert_eq!(
        (&again["restocked"], &again["already_cancelled"]),
        (&true.into(), &true.into())
    );
    assert_eq!(remaining(public).await, 2);
    let metrics = scrape(admin).await;
    assert_eq!(
        value(
            &metrics,
            "flashgate_cancellations_total{restocked=\"true\",sku=\"phone\"}"
        ),
        Some(1.0),
        "{metrics}"
    );

    // The ticket and the token's replay say so.
    assert_eq!(poll_ticket(public, &ticket).await["status"], "cancelled");
    let replay = order(public, "phone", "alice", &token).await;
    assert_refused(&replay, StatusCode::GONE, "order_cancelled");
    assert_eq!(replay.json()["order_id"], id.as_str());
    // Her allowance is back (one unit a buyer): she buys again.
    let (_, second, _) = buy(public, "alice").await;
    assert_ne!(second, id);
}

#[tokio::test]
async fn an_order_not_delivered_or_compensated_is_not_cancelled() {
    let up = Upstream::start().await;
    // Every delivery is told "not now": the order stays in the outbox.
    up.orders_status.store(503, Ordering::SeqCst);
    let gw = gateway(&sale_config(&up, "", "")).await;
    let (public, admin) = (gw.public_addr, gw.admin_addr);
    let (_, id, ticket) = buy(public, "bob").await;
    let early = cancel(admin, &id, Some(ADMIN)).await;
    assert_refused(&early, StatusCode::CONFLICT, "order_not_delivered");
    assert_eq!(remaining(public).await, 1);
    // The backend refuses it for good: compensated, its unit back once.
    up.orders_status.store(400, Ordering::SeqCst);
    until_ticket(public, &ticket, "failed").await;
    let late = cancel(admin, &id, Some(ADMIN)).await;
    assert_refused(&late, StatusCode::CONFLICT, "order_compensated");
    assert_eq!(remaining(public).await, 2);
}

#[tokio::test]
async fn a_cancel_asked_again_after_a_restart_changes_nothing() {
    let up = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("flashgate-cancel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = sale_config(&up, &format!("data_dir = \"{}\"", dir.display()), "");
    let first = gateway(&cfg).await;
    let (token, id, ticket) = buy(first.public_addr, "carol").await;
    until_ticket(first.public_addr, &ticket, "confirmed").await;
    assert_eq!(
        cancelled(first.admin_addr, &id).await["already_cancelled"],
        false
    );
    first.shutdown();
    guarded("the first gateway to stop", first.wait())
        .await
        .expect("stopped");

    let gw = gateway(&cfg).await;
    let again = cancelled(gw.admin_addr, &id).await;
    assert_eq!(
        (&again["restocked"], &again["already_cancelled"]),
        (&true.into(), &true.into())
    );
    assert_eq!(remaining(gw.public_addr).await, 2);
    let replay = order(gw.public_addr, "phone", "carol", &token).await;
    assert_refused(&replay, StatusCode::GONE, "order_cancelled");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_instance_is_seen_by_the_other() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let shared = format!(
        "[cluster]\nsecret = \"cancel-test-secret-0123456789\"\n[store]\nkind = \"redis\"\nurl = \"{}\"\n\
         sync_interval = \"20ms\"\n[limits]\nticket_poll_rate = 0\n",
        redis.url()
    );
    let a = gateway(&sale_config(&up, "", &shared)).await;
    let b = gateway(&sale_config(&up, "", &shared)).await;
    let (token, id, ticket) = buy(a.public_addr, "dave").await;
    until_ticket(a.public_addr, &ticket, "confirmed").await;
    assert_eq!(cancelled(b.admin_addr, &id).await["restocked"], true);
    // A holds the ticket and the token's answer: it learns of the cancel from the store.
    until_ticket(a.public_addr, &ticket, "cancelled").await;
    let replay = order(a.public_addr, "phone", "dave", &token).await;
    assert_refused(&replay, StatusCode::GONE, "order_cancelled");
    assert_eq!(redis.command(&["GET", "flashgate:{phone}:stock"]), "2");

    // Two cancels of one order at once, through both: one takes effect.
    let (_, id, ticket) = buy(b.public_addr, "erin").await;
    until_ticket(b.public_addr, &ticket, "confirmed").await;
    let (x, y) = tokio::join!(cancelled(a.admin_addr, &id), cancelled(b.admin_addr, &id));
    let fresh = [&x, &y]
        .iter()
        .filter(|v| v["already_cancelled"] == false)
        .count();
    assert_eq!(fresh, 1, "{x} {y}");
    assert_eq!(redis.command(&["GET", "flashgate:{phone}:stock"]), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_the_store_lost_the_sale_waits_for_its_stock() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let shared = format!(
        "[cluster]\nsecret = \"cancel-test-secret-0123456789\"\n[store]\nkind = \"redis\"\nurl = \"{}\"\n\
         sync_interval = \"20ms\"\n",
        redis.url()
    );
    let gw = gateway(&sale_config(&up, "", &shared)).await;
    let (_, id, ticket) = buy(gw.public_addr, "fred").await;
    until_ticket(gw.public_addr, &ticket, "confirmed").await;
    // The store loses everything, the order with it: the sale is held until an operator
    // loads stock, and a cancel meanwhile is told to come back then, not that the order
    // never was.
    assert_eq!(redis.command(&["FLUSHALL"]), "+OK");
    until("the sale to be held", || async {
        send(gw.public_addr, get("/sale/phone")).await.json()["state"] == "held"
    })
    .await;
    let held = cancel(gw.admin_addr, &id, Some(ADMIN)).await;
    assert_refused(&held, StatusCode::SERVICE_UNAVAILABLE, "sale_held");
}
