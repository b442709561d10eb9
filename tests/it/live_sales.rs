//! Sales defined live through the admin API: created, changed and ended without a restart,
//! shared by every instance on a shared store, conditional on the version read, and never
//! undone by an instance restarting with an older config file.

use std::net::SocketAddr;

use crate::common::*;
use crate::redis_server::RedisServer;
use http::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "live-sales-admin";

/// An admin call with the token, an optional `If-Match`, and a JSON body (or none).
async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    if_match: Option<u64>,
    body: Value,
) -> Answer {
    admin_call(addr, ADMIN, method, path, if_match, body).await
}

fn config(up: &Upstream, rest: &str) -> String {
    format!(
        "{}[admin]\ntoken = \"{ADMIN}\"\n[queue]\nresponse = \"async\"\n[limits]\nper_user_rate = 0\nticket_poll_rate = 0\n{rest}",
        config_text(&up.url(), "")
    )
}

async fn state(addr: SocketAddr, sku: &str) -> Value {
    let a = send(addr, get(&format!("/sale/{sku}"))).await;
    a.json()["state"].clone()
}

/// Buys one unit of `sku` as `user` on `addr` (async mode): the order's first answer.
async fn buy(addr: SocketAddr, sku: &str, user: &str) -> Answer {
    let token = token_for(addr, sku, user).await;
    order(addr, sku, user, &token).await
}

#[tokio::test]
async fn a_sale_is_created_changed_and_ended_through_the_api() {
    let up = Upstream::start().await;
    let gw = gateway(&config(&up, "")).await;
    let (public, adm) = (gw.public_addr, gw.admin_addr);
    assert_eq!(
        send(public, get("/sale/shoes")).await.status,
        StatusCode::NOT_FOUND
    );

    let made = admin(adm, "PUT", "/admin/sales/shoes", None, json!({"stock": 5})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.json());
    assert_eq!(
        (made.json()["version"].clone(), made.headers["etag"].clone()),
        (json!(1), "\"1\"".parse().expect("etag"))
    );
    assert_eq!(state(public, "shoes").await, "open");
    let first = buy(public, "shoes", "ann").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(
        settled(public, first.json()["ticket"].as_str().expect("ticket")).await,
        "reserved"
    );
    // One unit a buyer, as defined.
    let second = buy(public, "shoes", "ann").await;
    assert_eq!(
        settled(public, second.json()["ticket"].as_str().expect("ticket")).await,
        "duplicate"
    );

    // Refused as the config file would be, naming the key.
    for (body, key) in [
        (json!({"stock": 5, "per_user_limit": 0}), "per_user_limit"),
        (
            json!({"stock": 5, "queue": {"capacity": 0}}),
            "queue.capacity",
        ),
        (json!({"stock": 5, "colour": "red"}), ""),
        (json!({"stock": 6}), "stock"),
        (json!({"stock": 5, "sku": "boots"}), "sku"),
    ] {
        let a = admin(adm, "PUT", "/admin/sales/shoes", Some(1), body.clone()).await;
        assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_sale");
        if !key.is_empty() {
            assert_eq!(a.json()["key"], key, "{body}");
        } else {
            assert!(
                a.json()["message"]
                    .as_str()
                    .expect("message")
                    .contains("colour"),
                "{:?}",
                a.json()
            );
        }
    }
    // A sku no route could name (a dot segment) is no sale either.
    for sku in [".", ".."] {
        let a = admin(
            adm,
            "PUT",
            &format!("/admin/sales/{sku}"),
            None,
            json!({"stock": 5}),
        )
        .await;
        assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_sale");
        assert_eq!(a.json()["key"], "sku", "{sku}: {:?}", a.json());
    }
    // Two per buyer now, conditional on version 1.
    let changed = admin(
        adm,
        "PUT",
        "/admin/sales/shoes",
        Some(1),
        json!({"stock": 5, "per_user_limit": 2}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.json());
    assert_eq!(changed.json()["version"], 2);
    let again = buy(public, "shoes", "ann").await;
    assert_eq!(
        settled(public, again.json()["ticket"].as_str().expect("ticket")).await,
        "reserved"
    );
    // A second operator still holding version 1 is refused.
    let stale = admin(
        adm,
        "PUT",
        "/admin/sales/shoes",
        Some(1),
        json!({"stock": 5, "per_user_limit": 9}),
    )
    .await;
    assert_refused(&stale, StatusCode::PRECONDITION_FAILED, "version_mismatch");
    assert_eq!(stale.json()["version"], 2);

    let shown = admin(adm, "GET", "/admin/sales/shoes", None, Value::Null).await;
    assert_eq!(shown.status, StatusCode::OK);
    let v = shown.json();
    assert_eq!(
        (
            v["version"].clone(),
            v["origin"].clone(),
            v["definition"]["per_user_limit"].clone()
        ),
        (json!(2), json!("api"), json!(2))
    );
    let listed = admin(adm, "GET", "/admin/sales", None, Value::Null)
        .await
        .json();
    let row = &listed["sales"][0];
    assert_eq!(
        (
            row["sku"].clone(),
            row["version"].clone(),
            row["origin"].clone()
        ),
        (json!("shoes"), json!(2), json!("api"))
    );

    let ended = admin(adm, "DELETE", "/admin/sales/shoes", None, Value::Null).await;
    assert_eq!(ended.status, StatusCode::OK, "{:?}", ended.json());
    assert_eq!(ended.json()["ended"], true);
    assert_eq!(state(public, "shoes").await, "closed");
    let token = ask_token(public, "shoes", "bob").await;
    assert_refused(&token, StatusCode::FORBIDDEN, "sale_closed");
    let late = admin(adm, "PUT", "/admin/sales/shoes", None, json!({"stock": 5})).await;
    assert_refused(&late, StatusCode::CONFLICT, "sale_ended");
    let unknown = admin(adm, "DELETE", "/admin/sales/hats", None, Value::Null).await;
    assert_refused(&unknown, StatusCode::NOT_FOUND, "unknown_sale");
}

#[tokio::test]
async fn the_window_of_an_open_sale_stays_put() {
    let up = Upstream::start().await;
    let soon = rfc3339_in(3600);
    let gw = gateway(&config(
        &up,
        &format!("[[sale]]\nsku = \"open\"\nstock = 3\n[[sale]]\nsku = \"later\"\nstock = 3\nstarts_at = \"{soon}\"\n"),
    ))
    .await;
    let adm = gw.admin_addr;
    // Seeded from the file: version 1.
    let open = admin(adm, "GET", "/admin/sales/open", None, Value::Null)
        .await
        .json();
    assert_eq!(
        (open["version"].clone(), open["origin"].clone()),
        (json!(1), json!("file"))
    );
    let moved = admin(
        adm,
        "PUT",
        "/admin/sales/open",
        None,
        json!({"stock": 3, "starts_at": soon}),
    )
    .await;
    assert_refused(&moved, StatusCode::CONFLICT, "sale_started");
    assert_eq!(moved.json()["key"], "starts_at");
    // Not opened yet: its opening may move, and a pre-queue be added.
    let later = rfc3339_in(7200);
    let a = admin(
        adm,
        "PUT",
        "/admin/sales/later",
        None,
        json!({"stock": 3, "starts_at": later, "prequeue": "10m"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let view = send(gw.public_addr, get("/sale/later")).await.json();
    assert_eq!(
        view["starts_at"].as_str().map(|s| s[..19].to_owned()),
        Some(later[..19].to_owned())
    );
}

fn shared(redis: &RedisServer) -> String {
    format!(
        "[cluster]\nsecret = \"live-sales-secret-0123456789\"\n[store]\nkind = \"redis\"\nurl = \"{}\"\nsync_interval = \"20ms\"\n",
        redis.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_every_change() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let cfg = config(&up, &shared(&redis));
    let a = gateway(&cfg).await;
    let b = gateway(&cfg).await;
    let made = admin(
        a.admin_addr,
        "PUT",
        "/admin/sales/lamp",
        None,
        json!({"stock": 4}),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.json());
    // B learns of it within its sync interval, and sells it.
    until("B to run the new sale", || async {
        state(b.public_addr, "lamp").await == "open"
    })
    .await;
    let sold = buy(b.public_addr, "lamp", "cat").await;
    assert_eq!(
        settled(
            b.public_addr,
            sold.json()["ticket"].as_str().expect("ticket")
        )
        .await,
        "reserved"
    );
    // A change through B reaches A: two a buyer.
    let changed = admin(
        b.admin_addr,
        "PUT",
        "/admin/sales/lamp",
        Some(1),
        json!({"stock": 4, "per_user_limit": 2}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.json());
    until("A to apply version 2", || async {
        let listed = admin(a.admin_addr, "GET", "/admin/sales", None, Value::Null)
            .await
            .json();
        listed["sales"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r["sku"] == "lamp" && r["version"] == 2))
    })
    .await;
    let more = buy(a.public_addr, "lamp", "cat").await;
    assert_eq!(
        settled(
            a.public_addr,
            more.json()["ticket"].as_str().expect("ticket")
        )
        .await,
        "reserved"
    );
    let stale = admin(
        a.admin_addr,
        "DELETE",
        "/admin/sales/lamp",
        Some(1),
        Value::Null,
    )
    .await;
    assert_refused(&stale, StatusCode::PRECONDITION_FAILED, "version_mismatch");

    // The window, through B: closed an hour ago on A too, then open again.
    let past = "2020-01-01T00:00:00Z";
    let body = json!({"stock": 4, "per_user_limit": 2, "ends_at": past});
    let shut = admin(b.admin_addr, "PUT", "/admin/sales/lamp", Some(2), body).await;
    assert_eq!(shut.status, StatusCode::OK, "{:?}", shut.json());
    until("A to close the window", || async {
        state(a.public_addr, "lamp").await == "closed"
    })
    .await;
    let body = json!({"stock": 4, "per_user_limit": 2});
    let reopened = admin(b.admin_addr, "PUT", "/admin/sales/lamp", Some(3), body).await;
    assert_eq!(reopened.status, StatusCode::OK, "{:?}", reopened.json());
    until("A to open it again", || async {
        state(a.public_addr, "lamp").await == "open"
    })
    .await;

    // A request queued on A (its drain held) when B ends the sale is answered sale_closed.
    let held = admin(
        a.admin_addr,
        "POST",
        "/admin/sales/lamp/hold",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(held.status, StatusCode::OK);
    let queued = buy(a.public_addr, "lamp", "dog").await;
    assert_eq!(queued.status, StatusCode::ACCEPTED);
    let ticket = queued.json()["ticket"].as_str().expect("ticket").to_owned();
    let ended = admin(
        b.admin_addr,
        "DELETE",
        "/admin/sales/lamp",
        Some(4),
        Value::Null,
    )
    .await;
    assert_eq!(ended.status, StatusCode::OK, "{:?}", ended.json());
    assert_eq!(settled(a.public_addr, &ticket).await, "closed");
    assert_eq!(state(a.public_addr, "lamp").await, "closed");
    // The buyers' answers stay readable.
    let kept = sold.json()["ticket"].as_str().expect("ticket").to_owned();
    assert_eq!(settled(b.public_addr, &kept).await, "reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_an_older_file_does_not_undo_an_api_change() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let cfg = config(
        &up,
        &format!("{}[[sale]]\nsku = \"desk\"\nstock = 9\n", shared(&redis)),
    );
    let first = gateway(&cfg).await;
    let changed = admin(
        first.admin_addr,
        "PUT",
        "/admin/sales/desk",
        Some(1),
        json!({"stock": 9, "per_user_limit": 3}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.json());
    first.shutdown();
    guarded("the first instance to stop", first.wait())
        .await
        .expect("stopped");

    let again = gateway(&cfg).await;
    let shown = admin(
        again.admin_addr,
        "GET",
        "/admin/sales/desk",
        None,
        Value::Null,
    )
    .await
    .json();
    assert_eq!(
        (
            shown["version"].clone(),
            shown["origin"].clone(),
            shown["definition"]["per_user_limit"].clone()
        ),
        (json!(2), json!("api"), json!(3))
    );
    for _ in 0..3 {
        let a = buy(again.public_addr, "desk", "eve").await;
        assert_eq!(
            settled(
                again.public_addr,
                a.json()["ticket"].as_str().expect("ticket")
            )
            .await,
            "reserved"
        );
    }
}

#[tokio::test]
async fn a_sale_made_through_the_api_survives_a_graceful_restart_of_the_memory_store() {
    let up = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("flashgate-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = config(&up, "").replace(
        "[upstream]",
        &format!("data_dir = \"{}\"\n[upstream]", dir.display()),
    );
    let first = gateway(&cfg).await;
    let made = admin(
        first.admin_addr,
        "PUT",
        "/admin/sales/mug",
        None,
        json!({"stock": 2}),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.json());
    let sold = buy(first.public_addr, "mug", "fay").await;
    assert_eq!(
        settled(
            first.public_addr,
            sold.json()["ticket"].as_str().expect("ticket")
        )
        .await,
        "reserved"
    );
    first.shutdown();
    guarded("the first gateway to stop", first.wait())
        .await
        .expect("stopped");

    let gw = gateway(&cfg).await;
    let view = send(gw.public_addr, get("/sale/mug")).await.json();
    assert_eq!(
        (view["state"].clone(), view["remaining"].clone()),
        (json!("open"), json!(1))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_definition_is_bounded_and_a_same_one_changes_nothing() {
    let up = Upstream::start().await;
    let gw = gateway(&config(&up, "[[sale]]\nsku = \"bag\"\nstock = 4\n")).await;
    let adm = gw.admin_addr;
    // Review finding: a queue of a trillion slots aborted every instance, at each restart.
    for (body, key) in [
        (
            json!({"stock": 5, "queue": {"capacity": 1_000_000_000_000u64}}),
            "queue.capacity",
        ),
        (
            json!({"stock": 5, "queue": {"workers": 4_611_686_018_427_387_904u64}}),
            "queue.workers",
        ),
    ] {
        let a = admin(adm, "PUT", "/admin/sales/big", None, body).await;
        assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_sale");
        assert_eq!(a.json()["key"], key);
    }
    // The same definition again: no new version, the origin as it was.
    let same = admin(adm, "PUT", "/admin/sales/bag", None, json!({"stock": 4})).await;
    assert_eq!(same.status, StatusCode::OK, "{:?}", same.json());
    assert_eq!(
        (
            same.json()["version"].clone(),
            same.json()["origin"].clone()
        ),
        (json!(1), json!("file"))
    );
    // A capacity set by a definition and then taken out of it is the default again, not
    // the setting it left stored behind.
    let capacity = |adm| async move {
        let listed = admin(adm, "GET", "/admin/sales", None, Value::Null)
            .await
            .json();
        listed["sales"][0]["capacity"].clone()
    };
    let default = capacity(adm).await;
    let set = admin(
        adm,
        "PUT",
        "/admin/sales/bag",
        None,
        json!({"stock": 4, "queue": {"capacity": 20}}),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.json());
    assert_eq!(capacity(adm).await, 20);
    let unset = admin(adm, "PUT", "/admin/sales/bag", None, json!({"stock": 4})).await;
    assert_eq!(unset.status, StatusCode::OK, "{:?}", unset.json());
    assert_eq!(capacity(adm).await, default);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_the_book_is_seeded_again_and_new_versions_still_apply() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let cfg = config(
        &up,
        &format!("{}[[sale]]\nsku = \"pen\"\nstock = 9\n", shared(&redis)),
    );
    let a = gateway(&cfg).await;
    let b = gateway(&cfg).await;
    let two = admin(
        a.admin_addr,
        "PUT",
        "/admin/sales/pen",
        Some(1),
        json!({"stock": 9, "per_user_limit": 2}),
    )
    .await;
    assert_eq!(two.status, StatusCode::OK, "{:?}", two.json());
    assert_eq!(redis.command(&["FLUSHALL"]), "+OK");
    // The file's definition is written again (version 1), and the stock loaded by hand.
    until("the book to be seeded again", || async {
        admin(a.admin_addr, "GET", "/admin/sales/pen", None, Value::Null)
            .await
            .status
            == StatusCode::OK
    })
    .await;
    let loaded = admin(
        a.admin_addr,
        "PUT",
        "/admin/sales/pen/stock",
        None,
        json!({"units": 9}),
    )
    .await;
    assert_eq!(loaded.status, StatusCode::OK, "{:?}", loaded.json());
    // Version 2 again, another definition: B applies it though it ran a version 2 before.
    let three = admin(
        a.admin_addr,
        "PUT",
        "/admin/sales/pen",
        Some(1),
        json!({"stock": 9, "per_user_limit": 3}),
    )
    .await;
    assert_eq!(
        (three.status, three.json()["version"].clone()),
        (StatusCode::OK, json!(2)),
        "{:?}",
        three.json()
    );
    until("B to sell again and run version 2", || async {
        let listed = admin(b.admin_addr, "GET", "/admin/sales", None, Value::Null)
            .await
            .json();
        let row = listed["sales"][0].clone();
        row["state"] == "open" && row["version"] == 2
    })
    .await;
    for _ in 0..3 {
        let sold = buy(b.public_addr, "pen", "gil").await;
        let ticket = sold.json()["ticket"].as_str().expect("ticket").to_owned();
        assert_eq!(settled(b.public_addr, &ticket).await, "reserved");
    }
    let counted = redis.command(&["HGET", "flashgate:{pen}:buyers", "gil"]);
    assert_eq!(counted, "3");
}

/// The drain rate `adm` lists for `sku` in force.
async fn rate_in_force(adm: SocketAddr, sku: &str) -> Option<u64> {
    let all = admin(adm, "GET", "/admin/sales", None, Value::Null)
        .await
        .json();
    all["sales"].as_array()?.iter().find(|s| s["sku"] == sku)?["drain_rate"].as_u64()
}

/// Adversarial review: a definition's new drain rate that the store did not take as the
/// sale's setting was answered 200 while the fleet kept the operator's older rate, and the
/// same PUT again changed nothing. Now the PUT is refused 503 and its retry stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_rate_the_store_did_not_take_is_refused_and_a_retry_stores_it() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let cfg = config(&up, &shared(&redis));
    let a = gateway(&cfg).await;
    let b = gateway(&cfg).await;
    let body = |rate: u32| json!({"stock": 10, "queue": {"drain_rate": rate}});
    let made = admin(a.admin_addr, "PUT", "/admin/sales/desk", None, body(50)).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.json());
    // An operator's own rate, stored as the sale's setting.
    let slow = json!({"rate": 5});
    let set = admin(
        a.admin_addr,
        "PUT",
        "/admin/sales/desk/drain_rate",
        None,
        slow,
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.json());
    // The store takes the definition but not the setting (plain SET refused a moment).
    assert_eq!(redis.command(&["ACL", "SETUSER", "default", "-set"]), "+OK");
    let refused = admin(a.admin_addr, "PUT", "/admin/sales/desk", None, body(100)).await;
    assert_eq!(redis.command(&["ACL", "SETUSER", "default", "+set"]), "+OK");
    assert_refused(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    // The failures of that moment (this PUT's and any background write's) may have opened
    // the store's breaker for its cooldown: the operator retries while told to retry.
    let again = guarded("the PUT to be answered other than 503", async {
        loop {
            let answer = admin(a.admin_addr, "PUT", "/admin/sales/desk", None, body(100)).await;
            if answer.status != StatusCode::SERVICE_UNAVAILABLE {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.json());
    for (name, gw) in [("A", &a), ("B", &b)] {
        until(&format!("{name} to run at the defined rate"), || async {
            rate_in_force(gw.admin_addr, "desk").await == Some(100)
        })
        .await;
    }
}
