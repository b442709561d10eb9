//! Queueing: overflow policies, async tickets with real positions, FIFO within a sale, the
//! invariants under a concurrent crowd, and shutdown with a full queue.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::common::*;
use http::StatusCode;
use tokio::task::JoinSet;

fn code(a: &Answer) -> String {
    a.json()["error"].as_str().unwrap_or("").to_owned()
}

fn sale(sku: &str, stock: u64, queue: &str) -> String {
    format!("[[sale]]\nsku = \"{sku}\"\nstock = {stock}\nqueue = {{ {queue} }}\n")
}

/// Admits `n` async orders from users `u0..` while the drain is held; returns their tickets.
async fn admit_async(addr: SocketAddr, sku: &str, n: usize) -> Vec<String> {
    let mut tickets = Vec::new();
    for i in 0..n {
        let user = format!("u{i}");
        let token = token_for(addr, sku, &user).await;
        let a = order(addr, sku, &user, &token).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
        let v = a.json();
        assert_eq!(v["position"], i as u64 + 1, "position from admission order");
        let ticket = v["ticket"].as_str().expect("ticket").to_owned();
        assert_eq!(
            a.headers["location"].to_str().expect("ascii"),
            format!("/sale/tickets/{ticket}")
        );
        tickets.push(ticket);
    }
    tickets
}

async fn ticket_status(addr: SocketAddr, ticket: &str) -> serde_json::Value {
    let a = send(addr, get(&format!("/sale/tickets/{ticket}"))).await;
    assert_eq!(a.status, StatusCode::OK);
    a.json()
}

async fn until_final(addr: SocketAddr, ticket: &str) -> serde_json::Value {
    guarded("ticket to finish", async {
        loop {
            let v = ticket_status(addr, ticket).await;
            if v["status"] != "queued" {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
}

const ASYNC: &str = "[queue]\nresponse = \"async\"\n";

#[tokio::test]
async fn a_full_queue_rejects_with_retry_after() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        &format!("{ASYNC}{}", sale("phone", 100, "capacity = 3")),
    )
    .await;
    gw.context()
        .sales
        .get("phone")
        .expect("sale")
        .set_draining(false);
    admit_async(gw.public_addr, "phone", 3).await;
    let t = token_for(gw.public_addr, "phone", "late").await;
    let a = order(gw.public_addr, "phone", "late", &t).await;
    assert_refused(&a, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(
        send(gw.public_addr, get("/sale/phone")).await.json()["queued"],
        3
    );
}

#[tokio::test]
async fn a_full_queue_redirects_to_the_busy_page() {
    let up = Upstream::start().await;
    let cfg = format!(
        "[queue]\nresponse = \"async\"\noverflow = \"redirect\"\n{}",
        sale("phone", 100, "capacity = 1")
    );
    let gw = sale_gateway(&up, &cfg).await;
    gw.context()
        .sales
        .get("phone")
        .expect("sale")
        .set_draining(false);
    admit_async(gw.public_addr, "phone", 1).await;
    let t = token_for(gw.public_addr, "phone", "late").await;
    let a = order(gw.public_addr, "phone", "late", &t).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let location = a.headers["location"].to_str().expect("ascii").to_owned();
    assert_eq!(location, "/sale/busy?sku=phone");
    let page = send(gw.public_addr, get(&location)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("phone"));

    let custom = format!("[queue]\nresponse = \"async\"\noverflow = \"redirect\"\nredirect_url = \"https://shop.example/busy\"\n{}", sale("tv", 100, "capacity = 1"));
    let gw = sale_gateway(&up, &custom).await;
    gw.context()
        .sales
        .get("tv")
        .expect("sale")
        .set_draining(false);
    admit_async(gw.public_addr, "tv", 1).await;
    let t = token_for(gw.public_addr, "tv", "late").await;
    let a = order(gw.public_addr, "tv", "late", &t).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers["location"], "https://shop.example/busy");
}

#[tokio::test]
async fn async_tickets_show_position_then_outcome() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        &format!("{ASYNC}{}", sale("phone", 100, "drain_rate = 100")),
    )
    .await;
    let addr = gw.public_addr;
    let s = gw.context().sales.get("phone").expect("sale").clone();
    s.set_draining(false);
    let tickets = admit_async(addr, "phone", 4).await;
    let v = ticket_status(addr, &tickets[3]).await;
    assert_eq!(v["status"], "queued");
    assert_eq!(v["position"], 4);
    assert_eq!(v["eta_ms"], 40, "4 ahead at 100/s");
    // The drain rate is a live knob; estimates follow it at once.
    s.set_drain_rate(400);
    assert_eq!(ticket_status(addr, &tickets[3]).await["eta_ms"], 10);
    s.set_draining(true);
    for t in &tickets {
        let v = until_final(addr, t).await;
        assert!(
            v["status"] == "reserved" || v["status"] == "confirmed",
            "{v}"
        );
        assert_eq!(v["order_id"].as_str().map(str::len), Some(32));
    }
    let a = send(addr, get("/sale/tickets/0123456789abcdef0123456789abcdef")).await;
    assert_refused(&a, StatusCode::NOT_FOUND, "unknown_ticket");
    let a = send(addr, get("/sale/tickets/not-a-ticket")).await;
    assert_refused(&a, StatusCode::NOT_FOUND, "unknown_ticket");
}

#[tokio::test]
async fn requests_are_served_in_admission_order() {
    let up = Upstream::start().await;
    // Half as much stock as buyers: exactly the first half in admission order may win.
    let gw = sale_gateway(
        &up,
        &format!(
            "{ASYNC}[queue.admit_factor]\n{}",
            sale("phone", 10, "workers = 1")
        )
        .replace("[queue.admit_factor]\n", "admit_factor = 3.0\n"),
    )
    .await;
    let addr = gw.public_addr;
    let s = gw.context().sales.get("phone").expect("sale").clone();
    s.set_draining(false);
    let tickets = admit_async(addr, "phone", 20).await;
    s.set_draining(true);
    for (i, t) in tickets.iter().enumerate() {
        let v = until_final(addr, t).await;
        let won = v["status"] == "reserved" || v["status"] == "confirmed";
        assert_eq!(won, i < 10, "ticket {i}: {v}");
        if !won {
            assert_eq!(v["status"], "sold_out");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_ten_thousand_never_oversells() {
    const USERS: usize = 10_000;
    const STOCK: u64 = 100;
    const CLIENTS: usize = 200;
    let up = Upstream::start().await;
    let cfg = format!(
        "[queue]\ndrain_rate = 100000\nworkers = 8\nmax_wait = \"30s\"\n{}",
        sale("phone", STOCK, "capacity = 20000")
    );
    let text = format!("{}{cfg}", config_text(&up.url(), "max_connections = 1000"))
        .replace("threads = 1\n", "");
    let gw = gateway(&text).await;
    let addr = gw.public_addr;

    // Each client task plays USERS / CLIENTS buyers in turn: token, order, and for winners
    // the same token again.
    let mut set = JoinSet::new();
    for c in 0..CLIENTS {
        set.spawn(async move {
            let mut results = Vec::new();
            for u in (c..USERS).step_by(CLIENTS) {
                let user = format!("user{u}");
                let t = ask_token(addr, "phone", &user).await;
                if t.status != StatusCode::OK {
                    results.push((user, t.status, None, None));
                    continue;
                }
                let token = t.json()["token"].as_str().expect("token").to_owned();
                let a = order(addr, "phone", &user, &token).await;
                let id = (a.status == StatusCode::CREATED)
                    .then(|| a.json()["order_id"].as_str().expect("id").to_owned());
                let replay = match &id {
                    Some(_) => Some(
                        order(addr, "phone", &user, &token).await.json()["order_id"]
                            .as_str()
                            .map(str::to_owned),
                    ),
                    None => None,
                };
                results.push((user, a.status, id, replay.flatten()));
            }
            results
        });
    }
    let mut answered = 0;
    let mut orders: HashMap<String, String> = HashMap::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    while let Some(r) = set.join_next().await {
        for (user, status, id, replay) in r.expect("client task") {
            answered += 1;
            *statuses.entry(status.as_u16()).or_default() += 1;
            assert!(
                matches!(status.as_u16(), 201 | 410),
                "{user}: unexpected {status}"
            );
            if let Some(id) = id {
                assert_eq!(
                    replay.as_deref(),
                    Some(id.as_str()),
                    "replay of {user} gave another order"
                );
                assert!(orders.insert(user, id).is_none());
            }
        }
    }
    assert_eq!(answered, USERS, "every buyer got an answer");
    assert_eq!(
        orders.len() as u64,
        STOCK,
        "exactly the stock was reserved: {statuses:?}"
    );
    let distinct: HashSet<&String> = orders.values().collect();
    assert_eq!(distinct.len() as u64, STOCK);
    let sale = gw.context().sales.get("phone").expect("sale").clone();
    assert_eq!(sale.remaining(), 0);
    let store_stock = gw
        .context()
        .store
        .stock(&sale.sku)
        .await
        .expect("stock")
        .units;
    assert_eq!(store_stock, 0);

    // The backend receives each order exactly once.
    let mut delivered = HashSet::new();
    while delivered.len() < STOCK as usize {
        let seen = up.next_seen().await;
        if seen.uri.path() == "/orders" {
            let key = seen.headers["idempotency-key"]
                .to_str()
                .expect("ascii")
                .to_owned();
            assert!(distinct.contains(&key), "unknown order delivered");
            delivered.insert(key);
        }
    }
}

#[tokio::test]
async fn shutdown_answers_every_queued_request() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        &format!(
            "[queue]\nmax_wait = \"60s\"\n{}",
            sale("phone", 100, "capacity = 50")
        ),
    )
    .await;
    let addr = gw.public_addr;
    let s = gw.context().sales.get("phone").expect("sale").clone();
    s.set_draining(false);
    let mut waiting = JoinSet::new();
    for i in 0..50 {
        let user = format!("u{i}");
        let token = token_for(addr, "phone", &user).await;
        waiting.spawn(async move { order(addr, "phone", &user, &token).await });
    }
    guarded("the queue to fill", async {
        while s.queue.len() < 50 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    gw.shutdown();
    let mut refused = 0;
    while let Some(a) = waiting.join_next().await {
        let a = a.expect("client task");
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code(&a), "shutting_down");
        assert!(a.headers.contains_key("retry-after"));
        refused += 1;
    }
    assert_eq!(refused, 50, "every queued request was answered");
    guarded("gateway to stop", gw.wait())
        .await
        .expect("nothing reserved was lost");
    let _ = Arc::strong_count(&s);
}

/// Adversarial review: with the ticket book full, a refused order was counted as admitted,
/// and the queue place it had taken stayed taken while the drain was held, until the queue
/// refused everyone.
#[tokio::test]
async fn a_full_ticket_book_refuses_without_keeping_queue_places() {
    let up = Upstream::start().await;
    // About one unfinished ticket per shard of the book: at most 32 of the 60 orders fit,
    // and the queue (40) never fills by itself.
    let cfg = format!(
        "[queue]\nresponse = \"async\"\nmax_tickets = 1\n{}",
        sale("phone", 1000, "capacity = 40")
    );
    let gw = sale_gateway(&up, &cfg).await;
    let addr = gw.public_addr;
    gw.context()
        .sales
        .get("phone")
        .expect("sale")
        .set_draining(false);
    let (mut accepted, mut refused) = (0u64, 0u64);
    for i in 0..60 {
        let user = format!("u{i}");
        let t = token_for(addr, "phone", &user).await;
        let a = order(addr, "phone", &user, &t).await;
        if a.status == StatusCode::ACCEPTED {
            accepted += 1;
        } else {
            assert_refused(&a, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
            refused += 1;
        }
    }
    assert!(refused >= 28, "{refused} refused");
    assert_eq!(
        send(addr, get("/sale/phone")).await.json()["queued"],
        accepted,
        "every queue place is held by an accepted order"
    );
    let metrics = send(gw.admin_addr, get("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let count = |outcome: &str| {
        let series =
            format!("flashgate_admission_decisions_total{{outcome=\"{outcome}\",sku=\"phone\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<u64>().ok())
    };
    assert_eq!(count("admitted"), Some(accepted));
    assert_eq!(count("queue_full"), Some(refused));
}

/// Adversarial review: with the ticket book (shared by all sales) full of one held sale's
/// tickets, another sale's refused orders each took and gave back a queue number; once its
/// ring was all given-back numbers, it refused every order for good, with nothing queued.
#[tokio::test]
async fn a_full_ticket_book_does_not_leave_another_sale_refusing_for_good() {
    let up = Upstream::start().await;
    // One unfinished ticket per shard of the book (32 shards); sale b's ring holds 4 numbers.
    let cfg = format!(
        "[queue]\nresponse = \"async\"\nmax_tickets = 32\n{}{}",
        sale("a", 1000, "capacity = 300"),
        sale("b", 1000, "capacity = 1")
    );
    let gw = sale_gateway(&up, &cfg).await;
    let addr = gw.public_addr;
    let a = gw.context().sales.get("a").expect("sale").clone();
    a.set_draining(false);
    // Fill every shard of the book with sale a's queued tickets.
    let mut n = 0;
    while a.queue.len() < 32 {
        let user = format!("a{n}");
        let t = token_for(addr, "a", &user).await;
        let _ = order(addr, "a", &user, &t).await;
        n += 1;
        assert!(n < 5_000, "the book did not fill");
    }
    for i in 0..12 {
        let user = format!("b{i}");
        let t = token_for(addr, "b", &user).await;
        let refused = order(addr, "b", &user, &t).await;
        assert_refused(&refused, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
    }
    // Sale a drains; its tickets finish and may be forgotten to make room.
    a.set_draining(true);
    until("sale a to drain", || {
        let a = a.clone();
        async move { a.pending() == 0 }
    })
    .await;
    let t = token_for(addr, "b", "late").await;
    let admitted = order(addr, "b", "late", &t).await;
    assert_eq!(
        admitted.status,
        StatusCode::ACCEPTED,
        "{:?}",
        admitted.json()
    );
}
