//! The admin API: bearer token required; list, pause/resume, drain rate and stock, live.

use crate::common::*;
use http::StatusCode;

const SALES: &str = "[[sale]]\nsku = \"phone\"\nstock = 10\n[[sale]]\nsku = \"tv\"\nstock = 3\n[queue]\nresponse = \"async\"\n";
const TOKEN: &str = "s3cret-admin-token";

fn admin(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    request(method, path, &headers, body)
}

/// An admin call with the right token.
async fn call(adm: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    send(adm, admin(method, path, Some(TOKEN), body)).await
}

#[tokio::test]
async fn the_admin_api_needs_the_token() {
    let up = Upstream::start().await;
    let off = sale_gateway(&up, SALES).await;
    let a = send(
        off.admin_addr,
        admin("GET", "/admin/sales", Some("anything"), ""),
    )
    .await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "unauthorized");

    let on = sale_gateway(&up, &format!("{SALES}[admin]\ntoken = \"{TOKEN}\"\n")).await;
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-admin-toke"),
        Some("s3cret-admin-token-"),
    ] {
        let a = send(on.admin_addr, admin("GET", "/admin/sales", token, "")).await;
        assert_refused(&a, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
    }
    let a = call(on.admin_addr, "GET", "/admin/sales", "").await;
    assert_eq!(a.status, StatusCode::OK);
    let sales = a.json()["sales"].as_array().expect("list").clone();
    assert_eq!(sales.len(), 2);
    assert_eq!(
        (sales[0]["sku"].as_str(), sales[0]["remaining"].as_u64()),
        (Some("phone"), Some(10))
    );
    assert_eq!(sales[1]["capacity"], 10000);
}

#[tokio::test]
async fn operators_steer_a_sale_live() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, &format!("{SALES}[admin]\ntoken = \"{TOKEN}\"\n")).await;
    let (addr, adm) = (gw.public_addr, gw.admin_addr);

    let a = call(adm, "POST", "/admin/sales/phone/pause", "").await;
    assert_eq!(
        (a.status, a.json()["state"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    assert_refused(
        &ask_token(addr, "phone", "u").await,
        StatusCode::FORBIDDEN,
        "sale_paused",
    );
    let a = call(adm, "POST", "/admin/sales/phone/resume", "").await;
    assert_eq!(a.json()["state"], "open");
    assert_eq!(ask_token(addr, "phone", "u").await.status, StatusCode::OK);

    // Hold: admission goes on, the queue fills, nothing drains until the release.
    let a = call(adm, "POST", "/admin/sales/tv/hold", "").await;
    assert_eq!(
        (a.json()["draining"].as_bool(), a.json()["state"].as_str()),
        (Some(false), Some("open"))
    );
    let token = token_for(addr, "tv", "held").await;
    let a = order(addr, "tv", "held", &token).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let ticket = a.json()["ticket"].as_str().expect("ticket").to_owned();
    let a = call(adm, "GET", "/admin/sales", "").await;
    assert_eq!(a.json()["sales"][1]["queued"], 1);
    let a = call(adm, "POST", "/admin/sales/tv/release", "").await;
    assert_eq!(a.json()["draining"], true);
    guarded("the released request to be reserved", async {
        loop {
            let v = send(addr, get(&format!("/sale/tickets/{ticket}")))
                .await
                .json();
            if v["status"] != "queued" {
                assert_eq!(v["status"], "reserved", "{v}");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;

    let a = call(
        adm,
        "PUT",
        "/admin/sales/phone/drain_rate",
        r#"{"rate": 123}"#,
    )
    .await;
    assert_eq!(a.json()["drain_rate"], 123);
    let a = call(
        adm,
        "PUT",
        "/admin/sales/phone/drain_rate",
        r#"{"rate": 0}"#,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");

    let a = call(adm, "PUT", "/admin/sales/tv/stock", r#"{"units": 0}"#).await;
    assert_eq!(a.json()["state"], "sold_out");
    assert_refused(
        &ask_token(addr, "tv", "u").await,
        StatusCode::GONE,
        "sold_out",
    );
    let a = call(adm, "PUT", "/admin/sales/tv/stock", r#"{"units": 50}"#).await;
    assert_eq!(a.json()["remaining"], 50);
    assert_eq!(send(addr, get("/sale/tv")).await.json()["remaining"], 50);
    assert_eq!(ask_token(addr, "tv", "u").await.status, StatusCode::OK);

    let a = call(adm, "PUT", "/admin/sales/tv/stock", "units=5").await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
    let a = call(adm, "POST", "/admin/sales/nope/pause", "").await;
    assert_refused(&a, StatusCode::NOT_FOUND, "unknown_sale");
    let a = call(adm, "DELETE", "/admin/sales/tv/stock", "").await;
    assert_refused(&a, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn queue_capacity_changes_live() {
    let up = Upstream::start().await;
    let cfg = format!(
        "[queue]\nresponse = \"async\"\n[[sale]]\nsku = \"phone\"\nstock = 100\nqueue = {{ capacity = 1 }}\n[admin]\ntoken = \"{TOKEN}\"\n"
    );
    let gw = sale_gateway(&up, &cfg).await;
    let (addr, adm) = (gw.public_addr, gw.admin_addr);
    gw.context()
        .sales
        .get("phone")
        .expect("sale")
        .set_draining(false);
    let buy = |user: &'static str| async move {
        let t = token_for(addr, "phone", user).await;
        order(addr, "phone", user, &t).await.status
    };
    assert_eq!(buy("a").await, StatusCode::ACCEPTED);
    assert_eq!(
        buy("b").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "capacity 1: full"
    );
    let a = call(
        adm,
        "PUT",
        "/admin/sales/phone/capacity",
        r#"{"capacity": 2}"#,
    )
    .await;
    assert_eq!(
        (
            a.json()["capacity"].as_u64(),
            a.json()["max_capacity"].as_u64()
        ),
        (Some(2), Some(4))
    );
    assert_eq!(buy("c").await, StatusCode::ACCEPTED, "raised live");
    let a = call(
        adm,
        "PUT",
        "/admin/sales/phone/capacity",
        r#"{"capacity": 5}"#,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn command_bodies_are_bounded_in_size_and_time() {
    let up = Upstream::start().await;
    let gw = gateway(&format!(
        "{}[admin]\ntoken = \"{TOKEN}\"\n{SALES}",
        config_text(&up.url(), "body_timeout = \"200ms\"")
    ))
    .await;
    let adm = gw.admin_addr;
    let big = format!("{{\"rate\": 1, \"pad\": \"{}\"}}", "x".repeat(5000));
    let a = call(adm, "PUT", "/admin/sales/phone/drain_rate", &big).await;
    assert_refused(&a, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    // A body that stops arriving is 408, not "too large".
    let (mut tx, body) = channel_body();
    let req = http::Request::put("/admin/sales/phone/drain_rate")
        .header("host", "admin")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body)
        .expect("request");
    tx.send_data(bytes::Bytes::from_static(b"{\"rate\""))
        .await
        .expect("send");
    let a = send(adm, req).await;
    assert_refused(&a, StatusCode::REQUEST_TIMEOUT, "request_timeout");
    drop(tx);
    let a = call(adm, "PUT", "/admin/sales/phone/drain_rate", "{\"rate\": 7}").await;
    assert_eq!(a.status, StatusCode::OK);
}

/// With the memory store, the instance is alone in its list, under the id it was given
/// and the address it advertises.
#[tokio::test]
async fn a_lone_instance_lists_itself() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        &format!("{SALES}[admin]\ntoken = \"{TOKEN}\"\n[cluster]\ninstance_id = \"solo\"\nadvertise = \"gw-1.internal:9180\"\n"),
    )
    .await;
    let listing = until_listed(gw.admin_addr).await;
    assert_eq!(listing["self"]["id"], "solo");
    assert_eq!(listing["instances"][0]["address"], "gw-1.internal:9180");
    assert_eq!(listing["instances"].as_array().map(Vec::len), Some(1));
    let a = send(gw.admin_addr, admin("GET", "/admin/instances", None, "")).await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// `GET /admin/instances` once this instance has announced itself.
async fn until_listed(adm: std::net::SocketAddr) -> serde_json::Value {
    until("the instance to announce itself", || async move {
        let a = call(adm, "GET", "/admin/instances", "").await;
        a.status == StatusCode::OK
            && a.json()["instances"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
    })
    .await;
    call(adm, "GET", "/admin/instances", "").await.json()
}

/// Contract (fleet review): a switch such as `POST …/pause` took any body (5 KB of text, a
/// declared 50 MB) and answered 200, though command bodies are at most 4096 bytes with no
/// unknown fields; and `/readyz` left `unavailable_sales`, `held` and `upstream_error` out
/// when empty, though a stable schema keeps them.
#[tokio::test]
async fn switches_take_no_body_and_readiness_keeps_its_schema() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, &format!("{SALES}[admin]\ntoken = \"{TOKEN}\"\n")).await;
    let adm = gw.admin_addr;
    let text = "x".repeat(5000);
    let a = call(adm, "POST", "/admin/sales/phone/pause", &text).await;
    assert_refused(&a, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let a = call(adm, "POST", "/admin/sales/phone/pause", "not json").await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
    for body in [r#"{"paused": false}"#, "[]", "null", "{}{}"] {
        let a = call(adm, "POST", "/admin/sales/phone/pause", body).await;
        assert_refused(&a, StatusCode::BAD_REQUEST, "bad_request");
    }
    let declared = raw(
        adm,
        format!(
            "POST /admin/sales/phone/pause HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 52428800\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    let list = call(adm, "GET", "/admin/sales", "").await.json();
    assert_eq!(
        list["sales"][0]["paused"], false,
        "no refused call paused it"
    );
    for body in ["", "{}", " {} "] {
        let a = call(adm, "POST", "/admin/sales/phone/pause", body).await;
        assert_eq!(a.status, StatusCode::OK, "{body:?}: {:?}", a.json());
    }

    let ready = send(adm, get("/readyz")).await.json();
    assert_eq!(
        (
            ready["unavailable_sales"].clone(),
            ready["held"].clone(),
            ready.get("upstream_error").cloned()
        ),
        (
            serde_json::json!([]),
            serde_json::json!([]),
            Some(serde_json::Value::Null)
        ),
        "{ready}"
    );
}
