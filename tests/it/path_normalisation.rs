//! One normalised path for every decision and for the upstream: each spelling an attacker
//! might use to reach the backend's order intake is sent over a raw socket, and a recording
//! upstream, reading paths as the most lenient backend would, never sees a write to it.

use crate::common::*;
use http::StatusCode;

const SALE: &str = "[limits]\nper_user_rate = 0\n[[sale]]\nsku = \"phone\"\nstock = 5\n";

#[tokio::test]
async fn no_spelling_of_the_order_intake_reaches_the_upstream() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    let variants = [
        "/orders",
        "/ORDERS",
        "/OrDeRs",
        "/orders/",
        "//orders",
        "/x/../orders",
        "/%6frders",
        "/%6Frders",
        "/%4F%52%44%45%52%53",
        "/%2forders",
        "/orders%2f",
        "/orders%2F",
        "/orders;x",
        "/orders;x/",
        "/orders%3bx",
        "/orders%00",
        "/orders%20",
        "/orders%09",
        "/orders.json",
        "/orders.",
        "/orders:create",
        "/orders/new",
        "/%256frders",
        "/%25%36%66rders",
        "/%c0%afqorders",
        "/x%c0%af..%c0%aforders",
        "/%2e%2e/orders",
        "/x/%2e%2e/orders",
        "/x/%2E./orders",
        "/x/..;/orders",
        "/x%5c..%5corders",
        "/x/%2e%2e%2forders",
        "/static/..%2forders",
        "///orders//",
        "/./orders",
        "/%20orders",
        "/%20/orders",
        "/x/..%20/orders",
        "/%C2%A0orders",
        "/order%C5%BF",
        "/x/..%3B/orders",
        "/x/%2e%2e%3b/orders",
        "/%EF%BD%8Frders",
        "/x/%EF%BC%8E%EF%BC%8E/orders",
        "/%E2%80%83orders%E2%80%83",
        "/;x/orders",
        "/;/orders",
        "/%3B/orders",
        "/%EF%BB%BForders",
        "/%E2%80%8B/orders",
        "/x/..%EF%BB%BF/orders",
        "/orders%CC%81",
        "/orders%CC%8C",
        "/orders%CC%A7",
        "/orders%CC%87",
        "/orders%CC%B8",
        "/Orders%CC%81/x",
        "/%F3%A0%80%81orders",
        "/ord%F3%A0%80%81ers",
        "/orders%F0%9D%85%B3",
        "/%F0%9B%B2%A0orders",
    ];
    for path in variants {
        for method in ["POST", "PUT", "PATCH"] {
            let text = raw(
                addr,
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                )
                .as_bytes(),
            )
            .await;
            let status: u16 = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            assert!(
                status == 400 || status == 404 || status == 200,
                "{method} {path}: {text}"
            );
        }
    }
    // Whatever was forwarded is normalised and, read as leniently as any backend reads it,
    // is not the intake nor below it.
    for seen in up.drain_seen().await {
        let path = seen.uri.path();
        assert_eq!(
            flashgate::path::normalise(path).as_deref(),
            Ok(path),
            "forwarded as normalised"
        );
        for read in flashgate::path::lenient_readings(path) {
            assert!(
                !read
                    .first()
                    .is_some_and(|s| flashgate::path::reads_as(s, "orders")),
                "{} {path} reached the intake (read as {read:?})",
                seen.method
            );
        }
    }
}

#[tokio::test]
async fn the_upstream_and_the_sale_routes_see_the_normalised_path() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, SALE).await;
    let addr = gw.public_addr;
    // Decoded unreserved characters, upper-case escapes, merged slashes, query untouched.
    // Repeated slashes are merged before any route is chosen: `/sale//phone` is the sale.
    let a = send(addr, get("/sale//phone")).await;
    assert_eq!(
        (a.status, a.json()["sku"].as_str()),
        (StatusCode::OK, Some("phone"))
    );
    let a = send(addr, get("/%61pi//caf%c3%a9/%7euser%3f?q=%6f%2f")).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = up.next_seen().await;
    assert_eq!(seen.uri.path(), "/api/caf%C3%A9/~user%3F");
    assert_eq!(seen.uri.query(), Some("q=%6f%2f"));
    // An encoded sale route is the sale route, answered here and never proxied.
    let a = send(addr, get("/sale/%70hone")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["sku"], "phone");
    let a = send(addr, request("POST", "/sale/phone/%6frder", &[], "{}")).await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "missing_identity");
    // What no honest client sends is refused with the contract's code.
    for path in [
        "/a%2fb",
        "/a%00",
        "/%256f",
        "/%c0%af",
        "/a/%2e%2e/b",
        "/a%zz",
    ] {
        let a = send(addr, get(path)).await;
        assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
    }
    assert!(up.drain_seen().await.is_empty(), "nothing else was proxied");
}
