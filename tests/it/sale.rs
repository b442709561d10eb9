//! The sale routes end to end: every contract row and error code, over HTTP, against a real
//! backend on loopback.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;

const SALE: &str = "[[sale]]\nsku = \"phone\"\nstock = 10\n";

fn code(a: &Answer) -> String {
    a.json()["error"].as_str().unwrap_or("").to_owned()
}

/// Polls a ticket until `done` holds (the deliverer works in the background).
async fn ticket_until(
    addr: std::net::SocketAddr,
    ticket: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    guarded("ticket to reach the expected state", async {
        loop {
            let a = send(addr, get(&format!("/sale/tickets/{ticket}"))).await;
            assert_eq!(a.status, StatusCode::OK);
            let v = a.json();
            if done(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test]
async fn sale_status_reports_state_and_stock() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let a = send(gw.public_addr, get("/sale/phone")).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["sku"], "phone");
    assert_eq!(v["state"], "open");
    assert_eq!(v["remaining"], 10);
    assert_eq!(v["queued"], 0);
    let a = send(gw.public_addr, get("/sale/nope")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(code(&a), "unknown_sale");
    let a = send(gw.public_addr, request("DELETE", "/sale/phone", &[], "")).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn buy_reserves_then_the_backend_confirms() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let token = token_for(addr, "phone", "alice").await;
    assert_eq!(token.len(), 64);
    let a = order(addr, "phone", "alice", &token).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let v = a.json();
    assert_eq!(v["status"], "reserved");
    let order_id = v["order_id"].as_str().expect("order id").to_owned();
    let ticket = v["ticket"].as_str().expect("ticket").to_owned();

    // The backend receives it with the idempotency key.
    let seen = up.next_seen().await;
    assert_eq!(seen.uri.path(), "/orders");
    assert_eq!(seen.headers["idempotency-key"], order_id.as_str());
    let body: serde_json::Value = serde_json::from_slice(&seen.body).expect("order JSON");
    assert_eq!(body["order_id"], order_id.as_str());
    assert_eq!(
        (body["sku"].as_str(), body["user_id"].as_str()),
        (Some("phone"), Some("alice"))
    );
    assert_eq!(body["quantity"], 1);
    assert!(body["reserved_at"].as_u64().is_some());

    let v = ticket_until(addr, &ticket, |v| v["status"] == "confirmed").await;
    assert_eq!(v["order_id"], order_id.as_str());
    assert_eq!(send(addr, get("/sale/phone")).await.json()["remaining"], 9);
}

#[tokio::test]
async fn the_same_token_again_returns_the_same_order() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let token = token_for(addr, "phone", "alice").await;
    let first = order(addr, "phone", "alice", &token).await;
    let again = order(addr, "phone", "alice", &token).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(first.json()["order_id"], again.json()["order_id"]);
    assert_eq!(send(addr, get("/sale/phone")).await.json()["remaining"], 9);
}

#[tokio::test]
async fn identity_is_required_and_checked() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let a = send(
        gw.public_addr,
        request("POST", "/sale/phone/token", &[], ""),
    )
    .await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "missing_identity");
    let a = ask_token(gw.public_addr, "phone", "not valid").await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "bad_identity");

    let signed = sale_gateway(&up, &format!("{SALE}[identity]\nsecret = \"k\"\n")).await;
    let good = flashgate::identity::sign("k", "alice");
    let a = ask_token(signed.public_addr, "phone", &good).await;
    assert_eq!(a.status, StatusCode::OK);
    let forged = flashgate::identity::sign("guess", "alice");
    for id in [forged.as_str(), "alice"] {
        let a = ask_token(signed.public_addr, "phone", id).await;
        assert_refused(&a, StatusCode::UNAUTHORIZED, "bad_identity");
    }
}

#[tokio::test]
async fn bad_and_foreign_tokens_are_refused() {
    let up = Upstream::start().await;
    let two = format!("{SALE}[[sale]]\nsku = \"tv\"\nstock = 5\n");
    let gw = sale_gateway(&up, &two).await;
    let addr = gw.public_addr;
    let alices = token_for(addr, "phone", "alice").await;

    let a = order(addr, "phone", "alice", "short").await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
    let a = send(
        addr,
        request("POST", "/sale/phone/order", &[("x-user-id", "alice")], ""),
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
    let a = send(
        addr,
        request(
            "POST",
            "/sale/phone/order",
            &[("x-user-id", "alice")],
            "{\"token\": 5",
        ),
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
    let big = format!("{{\"token\": \"{}\"}}", "a".repeat(5000));
    let a = send(
        addr,
        request("POST", "/sale/phone/order", &[("x-user-id", "alice")], &big),
    )
    .await;
    assert_refused(&a, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // Well formed, but signed by no one.
    let unknown = "0123456789abcdef".repeat(4);
    let unknown = unknown.as_str();
    for (user, sku, token) in [
        ("alice", "phone", unknown),
        ("bob", "phone", alices.as_str()),
        ("alice", "tv", alices.as_str()),
    ] {
        let a = order(addr, sku, user, token).await;
        assert_eq!(
            (a.status, code(&a).as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_token"),
            "{user} {sku}"
        );
    }
    // Alice's token survived the attempts, and works from the JSON body too.
    let body = format!("{{\"token\": \"{alices}\"}}");
    let a = send(
        addr,
        request(
            "POST",
            "/sale/phone/order",
            &[("x-user-id", "alice")],
            &body,
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
}

#[tokio::test]
async fn a_second_unit_over_the_limit_is_a_duplicate() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let t1 = token_for(addr, "phone", "alice").await;
    assert_eq!(
        order(addr, "phone", "alice", &t1).await.status,
        StatusCode::CREATED
    );
    let t2 = token_for(addr, "phone", "alice").await;
    let a = order(addr, "phone", "alice", &t2).await;
    assert_refused(&a, StatusCode::CONFLICT, "duplicate");
}

#[tokio::test]
async fn sold_out_is_410_and_then_refused_at_the_edge() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 1\n").await;
    let addr = gw.public_addr;
    let ta = token_for(addr, "phone", "a").await;
    let tb = token_for(addr, "phone", "b").await;
    assert_eq!(
        order(addr, "phone", "a", &ta).await.status,
        StatusCode::CREATED
    );
    let a = order(addr, "phone", "b", &tb).await;
    assert_refused(&a, StatusCode::GONE, "sold_out");
    assert_eq!(
        send(addr, get("/sale/phone")).await.json()["state"],
        "sold_out"
    );
    // Now tokens and orders are refused before any queue or store.
    let a = ask_token(addr, "phone", "c").await;
    assert_refused(&a, StatusCode::GONE, "sold_out");
}

#[tokio::test]
async fn the_sale_window_and_pause_are_enforced() {
    let up = Upstream::start().await;
    let window = "[[sale]]\nsku = \"later\"\nstock = 1\nstarts_at = \"2999-01-01T00:00:00Z\"\n\
                  [[sale]]\nsku = \"past\"\nstock = 1\nstarts_at = \"2000-01-01T00:00:00Z\"\nends_at = \"2000-01-02T00:00:00Z\"\n";
    let gw = sale_gateway(&up, &format!("{SALE}{window}")).await;
    let addr = gw.public_addr;
    let a = ask_token(addr, "later", "a").await;
    assert_refused(&a, StatusCode::FORBIDDEN, "sale_not_started");
    assert_eq!(a.json()["starts_at"], "2999-01-01T00:00:00Z");
    assert_eq!(
        send(addr, get("/sale/later")).await.json()["state"],
        "upcoming"
    );
    let a = ask_token(addr, "past", "a").await;
    assert_refused(&a, StatusCode::FORBIDDEN, "sale_closed");
    assert_eq!(
        send(addr, get("/sale/past")).await.json()["state"],
        "closed"
    );

    let token = token_for(addr, "phone", "a").await;
    let sale = gw.context().sales.get("phone").expect("sale").clone();
    sale.set_paused(true);
    let a = order(addr, "phone", "a", &token).await;
    assert_refused(&a, StatusCode::FORBIDDEN, "sale_paused");
    assert_eq!(
        send(addr, get("/sale/phone")).await.json()["state"],
        "paused"
    );
    sale.set_paused(false);
    assert_eq!(
        order(addr, "phone", "a", &token).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_user_hammering_is_rate_limited() {
    let up = Upstream::start().await;
    let limits = "[limits]\nper_user_rate = 1\nper_user_burst = 3\n";
    let gw = sale_gateway(&up, &format!("{SALE}{limits}")).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let a = ask_token(gw.public_addr, "phone", "bot").await;
        statuses.push(a.status);
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(code(&a), "rate_limited");
            assert!(
                a.headers["retry-after"]
                    .to_str()
                    .expect("ascii")
                    .parse::<u32>()
                    .expect("secs")
                    >= 1
            );
        }
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3], "the burst passes");
    assert!(statuses[3..]
        .iter()
        .all(|s| *s == StatusCode::TOO_MANY_REQUESTS));
    // Another user is not affected.
    let a = ask_token(gw.public_addr, "phone", "human").await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn a_refused_delivery_puts_the_stock_back() {
    let up = Upstream::start().await;
    let cfg = "[[sale]]\nsku = \"phone\"\nstock = 1\n[delivery]\npath = \"/reject\"\n";
    let gw = sale_gateway(&up, cfg).await;
    let addr = gw.public_addr;
    let t = token_for(addr, "phone", "alice").await;
    let a = order(addr, "phone", "alice", &t).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let ticket = a.json()["ticket"].as_str().expect("ticket").to_owned();
    let v = ticket_until(addr, &ticket, |v| v["status"] == "failed").await;
    assert_eq!(v["error"], "delivery_failed");
    // Stock is back, the sold-out flag is cleared, and alice may buy again.
    let s = send(addr, get("/sale/phone")).await.json();
    assert_eq!(
        (s["remaining"].as_u64(), s["state"].as_str()),
        (Some(1), Some("open"))
    );
    let t2 = token_for(addr, "phone", "alice").await;
    assert_eq!(
        order(addr, "phone", "alice", &t2).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn one_address_hammering_is_rate_limited_when_asked() {
    let up = Upstream::start().await;
    let limits = "[limits]\nper_user_rate = 0\nper_ip_rate = 1\nper_ip_burst = 2\n";
    let gw = sale_gateway(&up, &format!("{SALE}{limits}")).await;
    let statuses: Vec<StatusCode> = {
        let mut v = Vec::new();
        for user in ["a", "b", "c", "d"] {
            v.push(ask_token(gw.public_addr, "phone", user).await.status);
        }
        v
    };
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "different users, one address"
    );
}

#[tokio::test]
async fn the_identity_header_is_configurable() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, &format!("{SALE}[identity]\nheader = \"x-customer\"\n")).await;
    let a = ask_token(gw.public_addr, "phone", "alice").await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "missing_identity");
    let a = send(
        gw.public_addr,
        request("POST", "/sale/phone/token", &[("x-customer", "alice")], ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

/// Adversarial review: an order refused sold out by stock-aware admission (the flag not yet
/// set) was charged the user's rate limit twice: once by admission, once by the replay read.
#[tokio::test]
async fn a_sold_out_refusal_costs_one_rate_credit() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        "[limits]\nper_user_rate = 1\nper_user_burst = 2\n[queue]\nresponse = \"async\"\nadmit_factor = 1.0\n[[sale]]\nsku = \"phone\"\nstock = 2\n",
    )
    .await;
    let addr = gw.public_addr;
    gw.context()
        .sales
        .get("phone")
        .expect("sale")
        .set_draining(false);
    for user in ["x", "y"] {
        let t = token_for(addr, "phone", user).await;
        assert_eq!(
            order(addr, "phone", user, &t).await.status,
            StatusCode::ACCEPTED
        );
    }
    // Two pending for two units: nothing more can reserve. A burst of two pays for the
    // token and one refusal: were the refusal charged twice, it would be rate limited.
    let carols = token_for(addr, "phone", "carol").await;
    let a = order(addr, "phone", "carol", &carols).await;
    assert_refused(&a, StatusCode::GONE, "sold_out");
}

/// Load-test finding: once the last unit went, requests still queued waited for drain
/// permits (seconds, at the drain's pace) only to be told sold out. With no stock left they
/// are answered at the workers' pace: the drain stops leasing permits for them.
#[tokio::test]
async fn requests_queued_past_the_sell_out_are_answered_without_waiting_for_the_drain() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        "[limits]\nper_user_rate = 0\n[queue]\nresponse = \"async\"\ndrain_rate = 1\nadmit_factor = 100.0\n[[sale]]\nsku = \"phone\"\nstock = 1\n",
    )
    .await;
    let addr = gw.public_addr;
    let sale = gw.context().sales.get("phone").expect("sale").clone();
    sale.set_draining(false);
    let mut tickets = Vec::new();
    for u in 0..12 {
        let user = format!("u{u}");
        let t = token_for(addr, "phone", &user).await;
        let a = order(addr, "phone", &user, &t).await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
        tickets.push(a.json()["ticket"].as_str().expect("ticket").to_owned());
    }
    sale.set_draining(true);
    for t in &tickets {
        ticket_until(addr, t, |v| v["status"] != "queued").await;
    }
    // One lease (a budget of two permits at 1/s) sold the unit; at 1/s the other eleven
    // would have needed ten more.
    let leases = value(
        &scrape(gw.admin_addr).await,
        "flashgate_store_step_seconds_count{step=\"lease_drain\"}",
    )
    .expect("lease count");
    assert!(leases <= 3.0, "{leases} leases for one unit");
}
