//! No client can hurt another through the fleet: a ticket polled on an instance that did
//! not issue it is relayed to its owner, and a client polling in a loop is refused itself,
//! waits its turn for a relay instead of failing others', and never takes the owner's
//! probes down. Each attack is one the fleet review made against the release binary.

use std::net::SocketAddr;

use crate::common::*;
use crate::edge_costs::store_steps;
use crate::fleet::{admin, async_config};
use crate::redis_server::RedisServer;
use bytes::Bytes;
use flashgate::Gateway;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// `GET /sale/tickets/{ticket}` `n` times over one keep-alive connection; the statuses.
async fn poll_loop(addr: SocketAddr, ticket: String, n: usize) -> Vec<StatusCode> {
    guarded("polls over one connection", async move {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut statuses = Vec::with_capacity(n);
        for _ in 0..n {
            sender.ready().await.expect("connection stays open");
            let req = Request::get(format!("/sale/tickets/{ticket}"))
                .header("host", "shop.example")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = sender.send_request(req).await.expect("response");
            let status = resp.status();
            resp.into_body().collect().await.expect("body");
            statuses.push(status);
        }
        statuses
    })
    .await
}

/// Instance `id` of the held sale `phone`, answering orders with a ticket at once;
/// `limits` adds to the `[limits]` section (empty: the default poll limits).
async fn held_instance(up: &Upstream, redis: &RedisServer, id: &str, limits: &str) -> Gateway {
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 100\n";
    // The fleet's test config turns the per-ticket poll limit off: `limits` decides.
    let text = async_config(up, redis, id, sale).replace("ticket_poll_rate = 0\n", limits);
    let gw = gateway(&text).await;
    admin(gw.admin_addr, "POST", "/admin/sales/phone/hold", "").await;
    gw
}

/// Until every instance lists all `n`.
async fn fleet_of(gateways: &[&Gateway]) {
    for gw in gateways {
        until("each instance to list the fleet", || async {
            admin(gw.admin_addr, "GET", "/admin/instances", "").await["instances"]
                .as_array()
                .is_some_and(|l| l.len() == gateways.len())
        })
        .await;
    }
}

/// A queued ticket of `user` on `gw`.
async fn queued_ticket(gw: &Gateway, user: &str) -> String {
    let token = token_for(gw.public_addr, "phone", user).await;
    let queued = order(gw.public_addr, "phone", user, &token).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{:?}", queued.json());
    queued.json()["ticket"].as_str().expect("ticket").to_owned()
}

/// Attack: one ticket polled in a loop on 100 keep-alive connections to each of two
/// instances that relay it to its owner. Before, each relaying instance kept at most 32
/// connections to the owner and answered 503 `ticket_unavailable` at once when they were
/// busy (30–45 % of polls, and 7 of another buyer's 20), every failed poll read the store
/// once per sale, and the two relays' 64 connections took the owner's admin listener, so
/// its `/healthz` and `/readyz` failed. Now the flooder is refused itself (429), another
/// buyer's polls are all answered, the owner's probes all pass, and no poll reads the
/// store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_polling_in_a_loop_through_the_fleet_hurts_no_one_else() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let a = held_instance(&up, &redis, "gw-a", "").await;
    let b = held_instance(&up, &redis, "gw-b", "").await;
    let c = held_instance(&up, &redis, "gw-c", "").await;
    fleet_of(&[&a, &b, &c]).await;
    let flooded = queued_ticket(&a, "mallory").await;
    let bobs = queued_ticket(&a, "bob").await;
    let reads_before = (
        store_steps(b.admin_addr, "ticket_record").await,
        store_steps(c.admin_addr, "ticket_record").await,
    );

    let mut flood = JoinSet::new();
    for via in [b.public_addr, c.public_addr] {
        for _ in 0..100 {
            flood.spawn(poll_loop(via, flooded.clone(), 10));
        }
    }
    // Meanwhile another buyer polls their own ticket at a waiting page's pace, and the
    // owner's orchestrator probes it.
    let bob = tokio::spawn(poll_loop(b.public_addr, bobs.clone(), 8));
    let mut probes = Vec::new();
    for _ in 0..16 {
        probes.push(send(a.admin_addr, get("/healthz")).await.status);
        probes.push(send(a.admin_addr, get("/readyz")).await.status);
    }
    let flood: Vec<StatusCode> = flood.join_all().await.into_iter().flatten().collect();
    let bob = bob.await.expect("bob's polls");

    assert!(
        bob.iter().all(|s| *s == StatusCode::OK),
        "another buyer's polls: {bob:?}"
    );
    assert!(
        probes.iter().all(|s| *s == StatusCode::OK),
        "the owner's probes: {probes:?}"
    );
    let refused = flood
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        flood
            .iter()
            .all(|s| matches!(*s, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS)),
        "the flood's own answers are its ticket or 429"
    );
    assert!(refused > 0, "the flooder is refused itself");
    assert_eq!(
        (
            store_steps(b.admin_addr, "ticket_record").await,
            store_steps(c.admin_addr, "ticket_record").await,
        ),
        reads_before,
        "the owner answered every relayed poll: no store read"
    );
    let text = scrape(b.admin_addr).await;
    let relays = |result: &str| {
        value(
            &text,
            &format!("flashgate_ticket_relays_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(relays("answered") >= 8.0, "bob's polls, at least");
    assert!(relays("rate_limited") > 0.0);
    assert_eq!(relays("owner_gone") + relays("owner_silent"), 0.0);
}

/// With the poll limits off, 100 relays at once exceed the relay connections to the
/// owner: before, the excess was answered 503 `ticket_unavailable` at once though the
/// owner was healthy; now each waits its turn (first come, first served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_beyond_the_connections_to_the_owner_wait_their_turn() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let off = "ticket_poll_rate = 0\nrelay_per_ip_rate = 0\n";
    let a = held_instance(&up, &redis, "gw-a", off).await;
    let b = held_instance(&up, &redis, "gw-b", off).await;
    fleet_of(&[&a, &b]).await;
    let ticket = queued_ticket(&a, "alice").await;

    let mut polls = JoinSet::new();
    for _ in 0..100 {
        polls.spawn(poll_loop(b.public_addr, ticket.clone(), 5));
    }
    let statuses: Vec<StatusCode> = polls.join_all().await.into_iter().flatten().collect();
    let unanswered = statuses.iter().filter(|s| **s != StatusCode::OK).count();
    assert_eq!(unanswered, 0, "of {} polls: {statuses:?}", statuses.len());
}

/// Attack: 70 idle connections to the admin listener took its fixed cap of 64, and
/// `/healthz` answered 503 until `header_timeout` closed them, again and again. Now the
/// cap is per source address too (`admin.max_connections_per_ip`, 64): one address cannot
/// take the probes' room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_leave_the_probes_room() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 5\n").await;
    let mut idle = Vec::new();
    for _ in 0..70 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        idle.push(socket.connect(gw.admin_addr).await.expect("connect"));
    }
    until(
        "the admin listener to refuse the six over its per-address cap",
        || async {
            let text = scrape(gw.admin_addr).await;
            value(
                &text,
                "flashgate_connections_refused_total{listener=\"admin\",reason=\"per_ip\"}",
            ) == Some(6.0)
        },
    )
    .await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(send(gw.admin_addr, get(path)).await.status, StatusCode::OK);
    }
    drop(idle);
}

/// With `limits.relay_per_ip_rate` on, a client address polling many tickets that another
/// instance must answer is refused once past its burst, whichever tickets it polls; a poll
/// the instance answers from its own book is never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_address_past_its_relay_burst_is_refused() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let per_ip = "ticket_poll_rate = 0\nrelay_per_ip_rate = 1\nrelay_per_ip_burst = 3\n";
    let a = held_instance(&up, &redis, "gw-a", per_ip).await;
    let b = held_instance(&up, &redis, "gw-b", per_ip).await;
    fleet_of(&[&a, &b]).await;
    let mut tickets = Vec::new();
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        tickets.push(queued_ticket(&a, user).await);
    }
    let mut statuses = Vec::new();
    for ticket in tickets.iter().chain(&tickets) {
        statuses.extend(poll_loop(b.public_addr, ticket.clone(), 1).await);
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3], "{statuses:?}");
    assert!(
        statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    for ticket in &tickets {
        assert_eq!(
            poll_loop(a.public_addr, ticket.clone(), 3).await,
            [StatusCode::OK; 3],
            "the owner answers from its own book"
        );
    }
}
