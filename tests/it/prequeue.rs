//! A pre-queue shuffled at the opening: orders sent before `starts_at` (within the
//! pre-queue window) are answered `prequeued` at once, and at the opening put in one
//! uniform random order — one for the whole fleet — of which the places beyond remaining ×
//! admit_factor are told sold out at once and the rest served in that order.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use crate::common::*;
use crate::fleet::{admin, instance_config};
use crate::redis_server::RedisServer;
use flashgate::Gateway;
use http::StatusCode;

/// Buyers in the big pre-queues. Each test's opening leaves a margin of seconds for them
/// to join before it (200 local requests take well under one), for a busy machine.
const BUYERS: usize = 200;
const STOCK: u64 = 20;
/// Places kept at the opening: stock × the default admit_factor (1.5).
const KEPT: u64 = 30;

fn sale(opening: &str) -> String {
    format!(
        "[[sale]]\nsku = \"phone\"\nstock = {STOCK}\nstarts_at = \"{opening}\"\nprequeue = \"1h\"\n"
    )
}

use crate::common::poll_ticket as poll;

/// Buyer `i` joins the pre-queue through `addr`: 202 `prequeued`, whatever the response
/// mode; a double click gets the same ticket. Returns the ticket.
async fn join(addr: SocketAddr, i: usize, opening: &str) -> String {
    let user = format!("b{i:03}");
    let token = token_for(addr, "phone", &user).await;
    let a = order(addr, "phone", &user, &token).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{user}: {:?}", a.json());
    let body = a.json();
    assert_eq!(body["status"], "prequeued", "{user}: {body}");
    assert_eq!(
        body["starts_at"].as_str().map(|s| s.get(..19)),
        Some(opening.get(..19))
    );
    assert!(
        body.get("position").is_none(),
        "no place before the opening"
    );
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();
    if i % 50 == 0 {
        let again = order(addr, "phone", &user, &token).await;
        assert_eq!(again.status, StatusCode::ACCEPTED);
        assert_eq!(again.json()["ticket"], ticket.as_str(), "double click");
        // One place a buyer: another token of the same user is refused, naming the place.
        let other = token_for(addr, "phone", &user).await;
        let third = order(addr, "phone", &user, &other).await;
        assert_eq!(third.status, StatusCode::CONFLICT, "{:?}", third.json());
        assert_eq!(third.json()["error"], "prequeue_place_taken");
        assert_eq!(third.json()["ticket"], ticket.as_str(), "another token");
    }
    ticket
}

/// Waits until no ticket is pre-queued any more; returns each ticket's answer then.
async fn after_the_opening(addrs: &[SocketAddr], tickets: &[String]) -> Vec<serde_json::Value> {
    let mut answers = Vec::new();
    for (i, t) in tickets.iter().enumerate() {
        let addr = addrs[i % addrs.len()];
        until("the opening to place the ticket", || async {
            poll(addr, t).await["status"] != "prequeued"
        })
        .await;
        answers.push(poll(addr, t).await);
    }
    answers
}

/// The places of the kept tickets are exactly 1..=KEPT (one permutation, whichever
/// instance answers); the others are sold out.
fn assert_one_permutation(answers: &[serde_json::Value]) {
    let places: Vec<u64> = answers
        .iter()
        .filter(|a| a["status"] == "queued")
        .map(|a| a["position"].as_u64().expect("position"))
        .collect();
    let unique: BTreeSet<u64> = places.iter().copied().collect();
    assert_eq!(
        places.len(),
        KEPT as usize,
        "kept: remaining × admit_factor"
    );
    assert_eq!(unique, (1..=KEPT).collect(), "every place once: {places:?}");
    let sold_out = answers.iter().filter(|a| a["status"] == "sold_out").count();
    assert_eq!(
        sold_out,
        BUYERS - KEPT as usize,
        "the rest told sold out at once"
    );
}

/// Waits for every ticket's outcome; returns the arrival indices of the buyers who
/// reserved.
async fn winners(addrs: &[SocketAddr], tickets: &[String]) -> Vec<usize> {
    let mut won = Vec::new();
    for (i, t) in tickets.iter().enumerate() {
        let addr = addrs[i % addrs.len()];
        until("every buyer to be told an outcome", || async {
            let a = poll(addr, t).await;
            a["status"] != "queued" && a["status"] != "prequeued"
        })
        .await;
        let a = poll(addr, t).await;
        if a["order_id"].is_string() {
            won.push(i);
        } else {
            assert_eq!(a["status"], "sold_out", "{a}");
        }
    }
    won
}

/// The winners are not the first arrivals. Under a uniform permutation the winners are a
/// uniform 20-subset of the 200 arrivals, and the sum of their arrival indices lies in
/// 631..=3349 with probability 1 − 9.7e-10 (exact, by counting subsets); the first
/// arrivals winning would sum to 190, the last to 3790.
fn assert_not_first_come(won: &[usize]) {
    assert_eq!(won.len(), STOCK as usize, "exactly the stock reserved");
    let sum: usize = won.iter().sum();
    assert!(
        (631..=3349).contains(&sum),
        "winners' arrival indices sum to {sum}: not a uniform draw ({won:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_shuffles_its_prequeue_at_the_opening() {
    let up = Upstream::start().await;
    let opening = rfc3339_in(6);
    let text = format!(
        "{}[queue]\nresponse = \"wait\"\n[limits]\nper_user_rate = 0\nticket_poll_rate = 0\n[admin]\ntoken = \"adm\"\n{}",
        config_text(&up.url(), ""),
        sale(&opening)
    );
    let gw = gateway(&text).await;
    let state = send(gw.public_addr, get("/sale/phone")).await.json();
    assert_eq!(state["state"], "prequeue");
    // Held: places stay still for the check below.
    admin(gw.admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    let mut tickets = Vec::new();
    for i in 0..BUYERS {
        tickets.push(join(gw.public_addr, i, &opening).await);
    }
    let first = poll(gw.public_addr, &tickets[0]).await;
    assert_eq!(first["status"], "prequeued", "{first}");
    let metrics =
        String::from_utf8_lossy(&send(gw.admin_addr, get("/metrics")).await.body).into_owned();
    assert!(
        metrics.contains(&format!(
            "flashgate_prequeue_size{{sku=\"phone\"}} {BUYERS}"
        )),
        "{metrics}"
    );

    let answers = after_the_opening(&[gw.public_addr], &tickets).await;
    assert_one_permutation(&answers);
    admin(gw.admin_addr, "POST", "/admin/sales/phone/release", "").await;
    let won = winners(&[gw.public_addr], &tickets).await;
    assert_not_first_come(&won);
    let metrics =
        String::from_utf8_lossy(&send(gw.admin_addr, get("/metrics")).await.body).into_owned();
    assert!(metrics.contains("flashgate_prequeue_size{sku=\"phone\"} 0"));
    assert!(metrics.contains("flashgate_prequeue_shuffle_seconds{sku=\"phone\"}"));
    gw.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_permutation() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let opening = rfc3339_in(8);
    let mut fleet: Vec<Gateway> = Vec::new();
    for id in ["gw-a", "gw-b"] {
        fleet.push(gateway(&instance_config(&up, &redis, id, &sale(&opening))).await);
    }
    admin(fleet[0].admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    until("the hold to reach the other instance", || async {
        let s = admin(fleet[1].admin_addr, "GET", "/admin/sales", "").await["sales"][0].clone();
        s["draining"] == false
    })
    .await;
    // 80 % of the buyers join through the first instance.
    let addr_of = |i: usize| match i % 5 {
        4 => fleet[1].public_addr,
        _ => fleet[0].public_addr,
    };
    let mut tickets = Vec::new();
    for i in 0..BUYERS {
        tickets.push(join(addr_of(i), i, &opening).await);
    }
    let addrs = [fleet[0].public_addr, fleet[1].public_addr];
    let answers = after_the_opening(&addrs, &tickets).await;
    assert_one_permutation(&answers);
    // The same place whichever instance answers.
    let mut places = HashMap::new();
    for (t, a) in tickets.iter().zip(&answers) {
        if a["status"] == "queued" {
            places.insert(t.clone(), a["position"].clone());
        }
    }
    for (t, place) in &places {
        for addr in addrs {
            assert_eq!(&poll(addr, t).await["position"], place, "{t}");
        }
    }
    admin(
        fleet[0].admin_addr,
        "POST",
        "/admin/sales/phone/release",
        "",
    )
    .await;
    let won = winners(&addrs, &tickets).await;
    assert_eq!(won.len(), STOCK as usize, "exactly the stock reserved");
    for gw in fleet {
        gw.shutdown();
    }
}

/// A one-instance gateway (memory store, wait mode) with a sale opening `secs` from now.
async fn one_instance(up: &Upstream, secs: u64, stock: u64, extra: &str) -> (Gateway, String) {
    let opening = rfc3339_in(secs);
    let text = format!(
        "{}[queue]\nresponse = \"wait\"\n{extra}\n[limits]\nper_user_rate = 0\nticket_poll_rate = 0\n[admin]\ntoken = \"adm\"\n\
         [[sale]]\nsku = \"phone\"\nstock = {stock}\nstarts_at = \"{opening}\"\nprequeue = \"1h\"\n",
        config_text(&up.url(), ""),
    );
    (gateway(&text).await, opening)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_told_sold_out_at_the_opening_stays_sold_out() {
    let up = Upstream::start().await;
    // One unit, kept places ceil(1 × 1.5) = 2: two of four members are told sold out.
    let (gw, opening) = one_instance(&up, 4, 1, "ticket_ttl = \"1s\"").await;
    let addr = gw.public_addr;
    // Held: the kept members stay queued, so the sold-out ones are the trimmed.
    admin(gw.admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    let mut joined = Vec::new();
    for i in 0..4 {
        let user = format!("b{i:03}");
        let token = token_for(addr, "phone", &user).await;
        let a = order(addr, "phone", &user, &token).await;
        assert_eq!(a.json()["status"], "prequeued", "{:?}", a.json());
        let ticket = a.json()["ticket"].as_str().expect("ticket").to_owned();
        joined.push((user, token, ticket));
    }
    let _ = opening;
    let mut trimmed = Vec::new();
    for (user, token, ticket) in &joined {
        until("the opening to place the ticket", || async {
            poll(addr, ticket).await["status"] != "prequeued"
        })
        .await;
        if poll(addr, ticket).await["status"] == "sold_out" {
            trimmed.push((user.clone(), token.clone(), ticket.clone()));
        }
    }
    assert_eq!(trimmed.len(), 2, "places beyond stock × admit_factor");
    admin(gw.admin_addr, "POST", "/admin/sales/phone/release", "").await;
    // Stock comes back, and the tickets are forgotten: the tokens' answer still stands.
    admin(
        addr_of_admin(&gw),
        "POST",
        "/admin/sales/phone/stock/add",
        r#"{"units": 3}"#,
    )
    .await;
    for (user, token, ticket) in &trimmed {
        until("the ticket to be forgotten", || async {
            send(addr, get(&format!("/sale/tickets/{ticket}")))
                .await
                .status
                == StatusCode::NOT_FOUND
        })
        .await;
        let again = order(addr, "phone", user, token).await;
        assert_eq!(
            (again.status, again.json()["error"].clone()),
            (StatusCode::GONE, serde_json::json!("sold_out")),
            "{user}: the first answer stands"
        );
    }
    gw.shutdown();
}

fn addr_of_admin(gw: &Gateway) -> SocketAddr {
    gw.admin_addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sale_takes_nobody_into_its_prequeue() {
    let up = Upstream::start().await;
    let (gw, _) = one_instance(&up, 3600, 5, "").await;
    admin(gw.admin_addr, "POST", "/admin/sales/phone/pause", "").await;
    let state = send(gw.public_addr, get("/sale/phone")).await.json();
    assert_eq!(state["state"], "paused");
    let t = ask_token(gw.public_addr, "phone", "u1").await;
    assert_eq!(
        (t.status, t.json()["error"].clone()),
        (StatusCode::FORBIDDEN, serde_json::json!("sale_paused"))
    );
    admin(gw.admin_addr, "POST", "/admin/sales/phone/resume", "").await;
    let token = token_for(gw.public_addr, "phone", "u1").await;
    admin(gw.admin_addr, "POST", "/admin/sales/phone/pause", "").await;
    let a = order(gw.public_addr, "phone", "u1", &token).await;
    assert_eq!(
        (a.status, a.json()["error"].clone()),
        (StatusCode::FORBIDDEN, serde_json::json!("sale_paused"))
    );
    gw.shutdown();
}

/// The members of the fleet's pre-queue in the store.
async fn members_in_store(redis: &RedisServer) -> u64 {
    use redis::AsyncCommands;
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    c.zcard("flashgate:{phone}:prequeue").await.expect("ZCARD")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_stops_gives_its_members_places_up() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let opening = rfc3339_in(3600);
    // The real binary: a place given up by a task still running when the process exits
    // would stay in the store.
    let (dir, cfg) = config_file(
        "prequeue-stop",
        &instance_config(&up, &redis, "gw-a", &sale(&opening))
            .replace("threads = 1\n", "threads = 1\nshutdown_grace = \"0s\"\n"),
    );
    let a = spawn_logged(&cfg);
    for i in 0..BUYERS {
        join(a.public, i, &opening).await;
    }
    assert_eq!(members_in_store(&redis).await, BUYERS as u64);
    a.signal(libc::SIGTERM);
    assert!(a.exit().await.success(), "a graceful stop");
    assert_eq!(
        members_in_store(&redis).await,
        0,
        "told shutting_down: places given up before the process exits"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_runs_behind_opens_when_the_fleet_did() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    // One sale for the fleet, but b's clock is ten minutes behind a's (libfaketime): b
    // still takes orders into the pre-queue when a has opened it. Two units, three places
    // kept.
    let opening = rfc3339_in(6);
    let sold = sale(&opening).replace(&format!("stock = {STOCK}"), "stock = 2");
    let a = gateway(&instance_config(&up, &redis, "gw-a", &sold)).await;
    let (dir, cfg) = config_file(
        "prequeue-behind",
        &instance_config(&up, &redis, "gw-b", &sold).replace(
            "[store]",
            "[store]
token_ttl = \"30m\"",
        ),
    );
    let b = spawn_logged_behind(&cfg, 600);
    admin(a.admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    let mut tickets = Vec::new();
    for i in 0..4 {
        tickets.push(join(b.public, i, &opening).await);
    }
    // a opens the fleet's pre-queue at its clock, though it has no member.
    until("a to seal the fleet's pre-queue", || async {
        use redis::AsyncCommands;
        let client = redis::Client::open(redis.url()).expect("redis url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let sealed: bool = c
            .hexists("flashgate:{phone}:line", "s")
            .await
            .expect("HEXISTS");
        sealed
    })
    .await;
    // An order at b after that is a late arrival: the line's places are taken.
    let token = token_for(b.public, "phone", "late").await;
    let late = order(b.public, "phone", "late", &token).await;
    assert_eq!(
        (late.status, late.json()["error"].clone()),
        (StatusCode::GONE, serde_json::json!("sold_out")),
        "{:?}",
        late.json()
    );
    // And b learnt that the sale opened: its members are placed now, not in ten minutes.
    let answers = after_the_opening(&[b.public], &tickets).await;
    let places: BTreeSet<u64> = answers
        .iter()
        .filter(|a| a["status"] == "queued")
        .map(|a| a["position"].as_u64().expect("position"))
        .collect();
    assert_eq!(places, (1..=3).collect(), "{answers:?}");
    a.shutdown();
    b.signal(libc::SIGTERM);
    // The gateway under faketime goes with its wrapper (it used to keep serving after the
    // test, one more a run).
    drop(b);
    let config = cfg.display().to_string();
    until("b's gateway to be gone", || async {
        !running_with(&config)
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_prequeue_the_store_lost_are_still_trimmed_and_paced() {
    let mut redis = RedisServer::start();
    let up = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("flashgate-prequeue-lost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opening = rfc3339_in(6);
    let cfg = instance_config(&up, &redis, "gw-a", &sale(&opening))
        .replace(&format!("stock = {STOCK}"), "stock = 3")
        .replace(
            "[upstream]",
            &format!("data_dir = \"{}\"\n[upstream]", dir.display()),
        );
    let gw = gateway(&cfg).await;
    let mut tickets = Vec::new();
    for i in 0..10 {
        tickets.push(join(gw.public_addr, i, &opening).await);
    }
    // The store restarts empty: the sale is held until an operator loads its stock.
    crate::fair_line::lose_the_store(&mut redis, &gw, 3).await;
    let won = winners(&[gw.public_addr], &tickets).await;
    assert_eq!(won.len(), 3, "exactly the stock reserved");
    // Places kept: ceil(3 × 1.5) = 5; the other five told sold out without a store step.
    assert_eq!(
        crate::edge_costs::store_steps(gw.admin_addr, "reserve").await,
        5
    );
    let metrics =
        String::from_utf8_lossy(&send(gw.admin_addr, get("/metrics")).await.body).into_owned();
    let fallbacks = metrics
        .lines()
        .find(|l| l.starts_with("flashgate_line_fallbacks_total{sku=\"phone\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        fallbacks > 0.0,
        "released at the instance's pace, counted: {fallbacks}"
    );
    gw.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prequeue_paused_over_its_opening_opens_when_resumed() {
    let up = Upstream::start().await;
    // One unit: opened now, two of the four members would be told sold out.
    let (gw, opening) = one_instance(&up, 3, 1, "").await;
    let addr = gw.public_addr;
    let mut tickets = Vec::new();
    for i in 0..4 {
        tickets.push(join(addr, i, &opening).await);
    }
    admin(gw.admin_addr, "POST", "/admin/sales/phone/pause", "").await;
    let opens =
        time::OffsetDateTime::parse(&opening, &time::format_description::well_known::Rfc3339)
            .expect("stamp");
    until("the opening time to pass", || async {
        time::OffsetDateTime::now_utc() > opens
    })
    .await;
    for t in &tickets {
        assert_eq!(
            poll(addr, t).await["status"],
            "prequeued",
            "not opened while paused"
        );
    }
    // The operator adds stock, then resumes: the places kept are reckoned from it.
    admin(
        gw.admin_addr,
        "POST",
        "/admin/sales/phone/stock/add",
        r#"{"units": 3}"#,
    )
    .await;
    admin(gw.admin_addr, "POST", "/admin/sales/phone/resume", "").await;
    let won = winners(&[addr], &tickets).await;
    assert_eq!(won.len(), 4, "every member served: four units");
    gw.shutdown();
}
