//! Hostile input, one test per kind: every answer carries the contract's code, nothing
//! panics or hangs, nothing reaches the upstream that should not, and the sale loses or
//! double-counts nothing (stock is checked after each barrage, and a real buyer still buys).
//!
//! Connection floods and slowloris headers are in tests/limits.rs; forged, foreign and
//! replayed tokens in tests/sale.rs; these add what those do not.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SALE: &str = "[limits]\nper_user_rate = 0\n[[sale]]\nsku = \"phone\"\nstock = 5\n";

/// The status code of the first response in `text`.
fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

/// The JSON error code in the first response of `text`.
fn code_of(text: &str) -> String {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("no JSON body ({e}): {text:?}"));
    v["error"].as_str().unwrap_or("").to_owned()
}

/// Asserts the first answer in `text` has this status and JSON error code.
#[track_caller]
fn expect(text: &str, status: u16, code: &str) {
    assert_eq!(
        (status_of(text), code_of(text).as_str()),
        (status, code),
        "{text}"
    );
}

/// Sends `attempt` raw and asserts exactly one answer with `status`, then the close.
async fn one_answer(addr: SocketAddr, attempt: &str, status: u16) {
    let text = raw(addr, attempt.as_bytes()).await;
    assert_eq!(status_of(&text), status, "{attempt:?}\n{text}");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then close: {text}"
    );
}

async fn remaining(addr: SocketAddr) -> u64 {
    let a = send(addr, get("/sale/phone")).await;
    a.json()["remaining"].as_u64().expect("remaining")
}

/// After a barrage: the stock is whole and an honest buyer still gets a unit.
async fn still_sound(addr: SocketAddr, stock: u64) {
    assert_eq!(
        remaining(addr).await,
        stock,
        "no unit lost or sold by the barrage"
    );
    let token = token_for(addr, "phone", "honest-buyer").await;
    let a = order(addr, "phone", "honest-buyer", &token).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(remaining(addr).await, stock - 1);
}

fn order_with_body(user: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /sale/phone/order HTTP/1.1\r\nHost: t\r\nX-User-Id: {user}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn malformed_and_oversized_json_is_refused() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let token = token_for(addr, "phone", "mallory").await;
    let deep = "[".repeat(3000);
    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"a string\"".to_vec(),
        b"{\"token\": 5}".to_vec(),
        format!("{{\"token\": \"{token}\", \"quantity\": \"1\"}}").into_bytes(),
        format!("{{\"token\": \"{token}\", \"quantity\": -1}}").into_bytes(),
        format!("{{\"token\": \"{token}\", \"quantity\": 4294967296}}").into_bytes(),
        format!("{{\"token\": \"{token}\", \"quantity\": 2}}").into_bytes(),
        format!("{{\"token\": \"{token}\", \"admin\": true}}").into_bytes(),
        format!("{{\"token\": \"{token}\"}} trailing").into_bytes(),
        deep.into_bytes(),
        b"{\"token\": \"\xff\xfe\"}".to_vec(),
        vec![0u8; 64],
    ];
    for body in &bodies {
        let text = raw(addr, &order_with_body("mallory", body)).await;
        expect(&text, 400, "bad_request");
    }
    // Too large, declared or not.
    let huge = format!("{{\"token\": \"{}\"}}", "a".repeat(8000));
    let text = raw(addr, &order_with_body("mallory", huge.as_bytes())).await;
    expect(&text, 413, "body_too_large");
    let text = raw(
        addr,
        b"POST /sale/phone/order HTTP/1.1\r\nHost: t\r\nX-User-Id: mallory\r\n\
          Content-Length: 999999999999\r\nConnection: close\r\n\r\n{",
    )
    .await;
    expect(&text, 413, "body_too_large");
    let mut chunked = b"POST /sale/phone/order HTTP/1.1\r\nHost: t\r\nX-User-Id: mallory\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for _ in 0..10 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", "a".repeat(1024)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let text = raw(addr, &chunked).await;
    expect(&text, 413, "body_too_large");
    // The token survived all of it.
    let a = order(addr, "phone", "mallory", &token).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(remaining(addr).await, 4);
}

#[tokio::test]
async fn oversized_and_duplicated_headers_are_refused() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let token = token_for(addr, "phone", "mallory").await;

    // Two identities or two tokens: which one counts is ambiguous, so neither does.
    let two_ids = format!(
        "POST /sale/phone/order HTTP/1.1\r\nHost: t\r\nX-User-Id: mallory\r\nX-User-Id: alice\r\n\
         X-Sale-Token: {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let text = raw(addr, two_ids.as_bytes()).await;
    expect(&text, 401, "bad_identity");
    let two_tokens = format!(
        "POST /sale/phone/order HTTP/1.1\r\nHost: t\r\nX-User-Id: mallory\r\n\
         X-Sale-Token: {token}\r\nX-Sale-Token: {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let text = raw(addr, two_tokens.as_bytes()).await;
    expect(&text, 400, "bad_request");
    // Conflicting lengths never reach a handler.
    let text = raw(
        addr,
        b"POST /sale/phone/order HTTP/1.1\r\nHost: t\r\nX-User-Id: mallory\r\n\
          Content-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert_eq!(status_of(&text), 400, "{text}");
    // A header block larger than the server reads is cut off by the HTTP layer (431/400,
    // no JSON: no handler ran) and the connection closed.
    let big = format!(
        "GET /sale/phone HTTP/1.1\r\nHost: t\r\nX-Junk: {}\r\n\r\n",
        "j".repeat(512 * 1024)
    );
    let text = raw(addr, big.as_bytes()).await;
    assert!(matches!(status_of(&text), 400 | 431), "{text}");
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let text = raw(
        addr,
        format!("GET /sale/phone HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(matches!(status_of(&text), 400 | 431), "{text}");
    let a = order(addr, "phone", "mallory", &token).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert!(up.drain_seen().await.is_empty(), "nothing was proxied");
}

#[tokio::test]
async fn invalid_utf8_in_identity_and_token_is_refused() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let token = token_for(addr, "phone", "mallory").await;
    let bad_id = [
        b"POST /sale/phone/token HTTP/1.1\r\nHost: t\r\nX-User-Id: m\xff\xfe\r\n".as_slice(),
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    let text = raw(addr, &bad_id).await;
    expect(&text, 401, "bad_identity");
    let bad_token = [
        b"POST /sale/phone/order HTTP/1.1\r\nHost: t\r\nX-User-Id: mallory\r\n".as_slice(),
        b"X-Sale-Token: 0123456789abcdef\xff0123456789abcde\r\n",
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    let text = raw(addr, &bad_token).await;
    expect(&text, 400, "bad_request");
    // Control characters and over-long ids are not identities either.
    for id in ["a\tb", &"x".repeat(300), ""] {
        let req = format!(
            "POST /sale/phone/token HTTP/1.1\r\nHost: t\r\nX-User-Id: {id}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let text = raw(addr, req.as_bytes()).await;
        assert_eq!(status_of(&text), 401, "{id:?}: {text}");
    }
    let a = order(addr, "phone", "mallory", &token).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
}

#[tokio::test]
async fn forged_identities_and_expired_tokens_are_refused() {
    let up = Upstream::start().await;
    let text = format!("{SALE}[identity]\nsecret = \"k\"\n[store]\ntoken_ttl = \"1s\"\n");
    let gw = sale_gateway(&up, &text).await;
    let addr = gw.public_addr;
    let alice = flashgate::identity::sign("k", "alice");
    let alice_sig = alice.rsplit_once('.').expect("signed").1.to_owned();
    for forged in [
        format!("bob.{alice_sig}"),
        format!("alice.{}", &alice_sig[..alice_sig.len() - 2]),
        format!("alice.{}", alice_sig.to_uppercase().replace('A', "B")),
        "alice.".to_owned(),
        "alice.zz".to_owned(),
        format!("alice.{alice_sig}.{alice_sig}"),
    ] {
        let a = ask_token(addr, "phone", &forged).await;
        assert_refused(&a, StatusCode::UNAUTHORIZED, "bad_identity");
    }
    let issued = Instant::now();
    let token = token_for(addr, "phone", &alice).await;
    // Wait on the clock, not on a guess: until the token's lifetime has surely passed.
    guarded("the token to expire", async {
        while issued.elapsed() < Duration::from_millis(1100) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let a = order(addr, "phone", &alice, &token).await;
    assert_refused(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid_token");
    assert_eq!(remaining(addr).await, 5);
}

#[tokio::test]
async fn tickets_that_are_not_ours_are_unknown() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let long = "f".repeat(5000);
    for id in [
        "0123456789abcdef0123456789abcdef",
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "%41",
        long.as_str(),
    ] {
        let a = send(addr, get(&format!("/sale/tickets/{id}"))).await;
        assert_refused(&a, StatusCode::NOT_FOUND, "unknown_ticket");
        assert!(a.body.len() < 300, "nothing of the id is echoed at length");
    }
    let a = send(addr, get("/sale/tickets/%2e%2e")).await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
    assert!(up.drain_seen().await.is_empty());
}

#[tokio::test]
async fn path_tricks_on_sale_routes_reach_nothing() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    // Sale paths are answered here, never proxied as "not a sale route": with a trailing
    // slash refused, with repeated slashes merged into the route they spell.
    for (path, status, code) in [
        ("/sale/phone/order/", 404, "not_found"),
        ("/sale//phone/order", 400, "bad_request"),
        ("/sale/%70hone//order", 400, "bad_request"),
    ] {
        let text = raw(
            addr,
            format!("POST {path} HTTP/1.1\r\nHost: t\r\nX-User-Id: m\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        expect(&text, status, code);
    }
    // Dot segments, plain or encoded, are refused before any upstream could resolve them.
    for path in [
        "/sale/phone/../../orders",
        "/sale/x/%2e%2e/%2E%2E/orders",
        "/static/../sale/phone/order",
        "/a/./b",
    ] {
        let text = raw(
            addr,
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        expect(&text, 400, "bad_request");
    }
    // The backend's order intake is the deliverer's alone.
    for path in ["/orders", "/Orders", "//orders/"] {
        let text = raw(
            addr,
            format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").as_bytes(),
        )
        .await;
        expect(&text, 404, "not_found");
    }
    // An encoded sku is the sku it spells; a very long one is an unknown sale, not echoed.
    assert_eq!(
        send(addr, get("/sale/ph%6Fne")).await.json()["sku"],
        "phone"
    );
    let long = format!("/sale/{}", "p".repeat(4000));
    for path in [long.as_str(), "/sale/ph%C3%B6ne"] {
        let a = send(addr, get(path)).await;
        assert_refused(&a, StatusCode::NOT_FOUND, "unknown_sale");
        assert!(a.body.len() < 300);
    }
    assert!(
        up.drain_seen().await.is_empty(),
        "nothing reached the upstream"
    );
    // Reading the orders page is still proxied: only ordering is kept off it.
    let a = send(addr, get("/orders")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(up.next_seen().await.uri.path(), "/orders");
    still_sound(addr, 5).await;
}

#[tokio::test]
async fn request_smuggling_through_the_proxy_goes_nowhere() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    // Both framings: Transfer-Encoding alone counts, the connection ends after one answer,
    // so whatever follows the chunked body is never read as a request.
    let framed_twice = [
        format!("POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n{smuggled}"),
    ];
    for attempt in &framed_twice {
        one_answer(addr, attempt, 200).await;
    }
    // Codings that do not end in chunked, obfuscated names, differing lengths: refused.
    let malformed = [
        format!("POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n{smuggled}"),
        format!("POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /a HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n{smuggled}"),
        format!("POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: +0\r\n\r\n{smuggled}"),
    ];
    for attempt in &malformed {
        one_answer(addr, attempt, 400).await;
    }
    // The upstream saw the two TE-framed requests, with their chunked bodies, and nothing else.
    let seen: Vec<(String, Vec<u8>)> = up
        .drain_seen()
        .await
        .into_iter()
        .map(|s| (s.uri.path().to_owned(), s.body.to_vec()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/a".to_owned(), Vec::new()),
            ("/a".to_owned(), b"SMUGGLED".to_vec())
        ]
    );
}

#[tokio::test]
async fn a_slow_body_is_cut_off_with_408() {
    let up = Upstream::start().await;
    let text = format!(
        "{}[limits]\nper_user_rate = 0\n[[sale]]\nsku = \"phone\"\nstock = 5\n",
        config_text(&up.url(), "body_timeout = \"200ms\"")
    );
    let gw = gateway(&text).await;
    let addr = gw.public_addr;
    let token = token_for(addr, "phone", "sloth").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = "POST /sale/phone/order HTTP/1.1\r\nHost: t\r\nX-User-Id: sloth\r\n\
                Content-Length: 60\r\n\r\n{\"tok";
    s.write_all(head.as_bytes()).await.expect("write");
    // The rest never comes; the gateway answers on its own and drops the connection.
    let text = read_until_closed(&mut s).await;
    expect(&text, 408, "request_timeout");
    // Other buyers were served meanwhile and the sloth's token is intact.
    let a = order(addr, "phone", "sloth", &token).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
}

/// Attack (fleet review): a proxied request whose own body is broken (a chunk size `zz`,
/// a bare-LF chunk line, a chunk size past 64 bits, a half-close mid-body) was answered
/// 502 `upstream_unavailable` and counted in `flashgate_server_errors_total{route="proxy",
/// status="502"}`, the series behind the "upstream down" alert: any client could raise
/// it. It is the client's fault: 400 `bad_request`, counted as a client error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_request_body_is_the_clients_fault_never_the_upstreams() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let head = "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\nhello\n0\n\n",
        "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ] {
        let text = raw(gw.public_addr, format!("{head}{body}").as_bytes()).await;
        expect(&text, 400, "bad_request");
    }
    // Cut off mid-body: the client half-closes after 10 of 100 bytes.
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    s.write_all(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    s.shutdown().await.expect("half-close");
    let _ = read_until_closed(&mut s).await;
    until(
        "the four broken bodies to be counted as client errors",
        || async {
            let text = scrape(gw.admin_addr).await;
            value(
                &text,
                "flashgate_requests_total{route=\"proxy\",status=\"4xx\"}",
            ) == Some(4.0)
        },
    )
    .await;
    let text = scrape(gw.admin_addr).await;
    assert_eq!(
        value(
            &text,
            "flashgate_server_errors_total{route=\"proxy\",status=\"502\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "nothing blamed on the upstream"
    );
}

/// Contract (fleet review): a request target without a leading slash (`POST orders`), in
/// authority-form, or `*` on a method other than OPTIONS was forwarded as `POST /` with
/// the target for a `Host`. Each is refused 400 `bad_request` and nothing reaches the
/// upstream; `OPTIONS *` is still forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_in_the_wrong_form_are_refused() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    for target in ["orders", "example.com:80", "shop.example:443"] {
        for method in ["POST", "GET"] {
            let text = raw(
                gw.public_addr,
                format!("{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
            expect(&text, 400, "bad_request");
        }
    }
    let text = raw(
        gw.public_addr,
        b"POST * HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    expect(&text, 400, "bad_request");
    assert!(up.drain_seen().await.is_empty(), "nothing was forwarded");
    let text = raw(
        gw.public_addr,
        b"OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&text), 200, "{text}");
}
