//! Reloading the config file on SIGHUP, on the real binary: sales added, changed and
//! ended, limits and the log level applied, keys that take a restart named, a broken file
//! refused — while a proxied request is in flight and a ticket waits in a queue.

use std::net::SocketAddr;

use crate::common::*;
use http::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "reload-admin-token";

fn file(up: &Upstream, threads: u32, sales: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nthreads = {threads}\n\
         [upstream]\nurl = \"{}\"\ntimeout = \"30s\"\n[admin]\ntoken = \"{ADMIN}\"\n\
         [queue]\nresponse = \"async\"\n[limits]\nper_user_rate = 0\nticket_poll_rate = 0\n{sales}",
        up.url()
    )
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: Value) -> Answer {
    admin_call(addr, ADMIN, method, path, None, body).await
}

/// Orders one unit of `sku` as `user`: its ticket.
async fn buy(addr: SocketAddr, sku: &str, user: &str) -> String {
    let token = token_for(addr, sku, user).await;
    let a = order(addr, sku, user, &token).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.json());
    a.json()["ticket"].as_str().expect("ticket").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_file_live_and_refuses_a_broken_one() {
    let up = Upstream::start().await;
    let v1 = file(
        &up,
        1,
        "[[sale]]\nsku = \"keep\"\nstock = 5\n[[sale]]\nsku = \"edit\"\nstock = 5\n\
         [[sale]]\nsku = \"gone\"\nstock = 5\n",
    );
    let (dir, cfg) = config_file("reload", &v1);
    let gw = spawn_logged(&cfg);
    let (public, adm) = (gw.public, gw.admin);
    // An operator's change through the API outranks the file from then on.
    let put = admin(
        adm,
        "PUT",
        "/admin/sales/keep",
        json!({"stock": 5, "per_user_limit": 3}),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.json());
    // A ticket waits in a held queue, and a proxied request is in flight.
    assert_eq!(
        admin(adm, "POST", "/admin/sales/gone/hold", Value::Null)
            .await
            .status,
        StatusCode::OK
    );
    let waiting = buy(public, "gone", "amy").await;
    let in_flight = tokio::spawn(async move { send(public, get("/hold")).await.status });
    assert_eq!(up.arrival().await, "/hold");

    let v2 = file(
        &up,
        2,
        "[[sale]]\nsku = \"keep\"\nstock = 5\nper_user_limit = 2\n\
         [[sale]]\nsku = \"edit\"\nstock = 5\nper_user_limit = 2\n[[sale]]\nsku = \"new\"\nstock = 3\n",
    )
    .replace("[limits]\n", "[limits]\nrelay_per_ip_rate = 77\n");
    std::fs::write(&cfg, v2).expect("write");
    gw.signal(libc::SIGHUP);
    until("the reload", || async {
        gw.logged("configuration reloaded")
    })
    .await;

    // The new sale sells; the changed one takes two a buyer; the API's stays at three.
    assert_eq!(
        settled(public, &buy(public, "new", "bea").await).await,
        "reserved"
    );
    for _ in 0..2 {
        assert_eq!(
            settled(public, &buy(public, "edit", "cy").await).await,
            "reserved"
        );
    }
    assert_eq!(
        settled(public, &buy(public, "edit", "cy").await).await,
        "duplicate"
    );
    let keep = admin(adm, "GET", "/admin/sales/keep", Value::Null)
        .await
        .json();
    assert_eq!(
        (
            keep["origin"].clone(),
            keep["definition"]["per_user_limit"].clone()
        ),
        (json!("api"), json!(3))
    );
    // The sale gone from the file is ended: its queued ticket is answered, not lost.
    assert_eq!(settled(public, &waiting).await, "closed");
    assert_eq!(
        send(public, get("/sale/gone")).await.json()["state"],
        "closed"
    );
    // The request in flight went through the reload.
    up.release();
    assert_eq!(in_flight.await.expect("task"), StatusCode::OK);
    assert!(gw.logged("server.threads"), "the restart-only key is named");
    let metrics = scrape(adm).await;
    assert_eq!(
        value(
            &metrics,
            "flashgate_config_reloads_total{outcome=\"applied\"}"
        ),
        Some(1.0)
    );

    // A broken file is refused, naming the key, and the gateway goes on as it was.
    std::fs::write(
        &cfg,
        file(
            &up,
            2,
            "[[sale]]\nsku = \"edit\"\nstock = 5\nper_user_limit = 0\n",
        ),
    )
    .expect("write");
    gw.signal(libc::SIGHUP);
    until("the refusal", || async { gw.logged("reload refused") }).await;
    assert!(
        gw.logged("sale.0.per_user_limit"),
        "the refusal names the key"
    );
    assert_eq!(send(public, get("/sale/new")).await.json()["state"], "open");
    assert_eq!(send(public, get("/sale/edit")).await.status, StatusCode::OK);
    let metrics = scrape(adm).await;
    assert_eq!(
        value(
            &metrics,
            "flashgate_config_reloads_total{outcome=\"refused\"}"
        ),
        Some(1.0)
    );
    gw.signal(libc::SIGTERM);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Review finding: a reload took the pre-queue away from a sale whose pre-queue had opened,
/// and its members were never placed. A reload keeps the rules of a running sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_move_an_opened_window() {
    let up = Upstream::start().await;
    let opening = rfc3339_in(6);
    let with = format!(
        "[[sale]]\nsku = \"early\"\nstock = 5\nstarts_at = \"{opening}\"\nprequeue = \"1h\"\n"
    );
    let (dir, cfg) = config_file("reload-window", &file(&up, 1, &with));
    let gw = spawn_logged(&cfg);
    let mut tickets = Vec::new();
    for u in ["p1", "p2", "p3"] {
        let token = token_for(gw.public, "early", u).await;
        let a = order(gw.public, "early", u, &token).await;
        assert_eq!(a.json()["status"], "prequeued", "{:?}", a.json());
        tickets.push(a.json()["ticket"].as_str().expect("ticket").to_owned());
    }
    let without = with.replace("prequeue = \"1h\"\n", "");
    std::fs::write(&cfg, file(&up, 1, &without)).expect("write");
    gw.signal(libc::SIGHUP);
    until("the refusal", || async { gw.logged("reload refused") }).await;
    assert!(gw.logged("prequeue"), "the refusal names the key");
    for t in &tickets {
        assert_eq!(settled(gw.public, t).await, "reserved");
    }
    gw.signal(libc::SIGTERM);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Review findings: a SIGHUP on an instance whose file did not change undid another
/// instance's reload; and no reload applied while the store did not answer, even one
/// that changed no sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_what_its_file_changed_and_needs_no_store_for_the_rest() {
    let redis = crate::redis_server::RedisServer::start();
    let up = Upstream::start().await;
    let store = format!(
        "[cluster]\nsecret = \"reload-test-secret-0123456789\"\n[store]\nkind = \"redis\"\nurl = \"{}\"\n\
         sync_interval = \"20ms\"\ntimeout = \"200ms\"\n",
        redis.url()
    );
    let one = format!("{store}[[sale]]\nsku = \"pen\"\nstock = 9\n");
    let (dir_a, cfg_a) = config_file("reload-a", &file(&up, 1, &one));
    let (dir_b, cfg_b) = config_file("reload-b", &file(&up, 1, &one));
    let a = spawn_logged(&cfg_a);
    let b = spawn_logged(&cfg_b);
    std::fs::write(
        &cfg_a,
        file(
            &up,
            1,
            &one.replace("stock = 9\n", "stock = 9\nper_user_limit = 3\n"),
        ),
    )
    .expect("write");
    a.signal(libc::SIGHUP);
    until("a's reload", || async {
        a.logged("configuration reloaded")
    })
    .await;
    b.signal(libc::SIGHUP);
    until("b's reload", || async {
        b.logged("configuration reloaded")
    })
    .await;
    let shown = admin(b.admin, "GET", "/admin/sales/pen", Value::Null)
        .await
        .json();
    assert_eq!(
        (
            shown["version"].clone(),
            shown["definition"]["per_user_limit"].clone()
        ),
        (json!(2), json!(3))
    );

    redis.pause();
    std::fs::write(
        &cfg_b,
        file(&up, 1, &one).replace("[limits]\n", "[limits]\nper_ip_rate = 5000\n"),
    )
    .expect("write");
    b.signal(libc::SIGHUP);
    until("b's second reload", || async {
        b.lines()
            .iter()
            .filter(|l| l["message"] == "configuration reloaded")
            .count()
            == 2
    })
    .await;
    redis.resume();
    assert!(!b.logged("reload refused"));
    for gw in [a, b] {
        gw.signal(libc::SIGTERM);
    }
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
}
