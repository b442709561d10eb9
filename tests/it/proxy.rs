//! Passthrough: everything that is not a sale route reaches the upstream unchanged but for
//! hop-by-hop headers and X-Forwarded-*, bodies stream both ways, failures answer JSON.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[tokio::test]
async fn get_passes_through_with_path_query_and_status() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let a = send(gw.public_addr, get("/catalog/items?page=2&q=a%20b")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["x-upstream"], "echo");
    let seen = up.next_seen().await;
    assert_eq!(seen.method, http::Method::GET);
    assert_eq!(
        seen.uri.path_and_query().map(|p| p.as_str()),
        Some("/catalog/items?page=2&q=a%20b")
    );
    assert_eq!(seen.version, Version::HTTP_11);
}

#[tokio::test]
async fn post_body_passes_through_byte_for_byte() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let payload = pattern(300_000, 7);
    let req = Request::post("/upload")
        .header("host", "shop.example")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(payload.clone())))
        .expect("request");
    let a = send(gw.public_addr, req).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = up.next_seen().await;
    assert_eq!(
        seen.body.as_ref(),
        payload.as_slice(),
        "upstream got other bytes"
    );
    assert_eq!(seen.headers["content-type"], "application/octet-stream");
    assert_eq!(
        a.body.as_ref(),
        payload.as_slice(),
        "client got other bytes"
    );
}

#[tokio::test]
async fn request_body_streams_before_it_is_complete() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let (mut tx, body) = channel_body();
    let req = Request::post("/stream-in")
        .header("host", "shop.example")
        .body(body)
        .expect("request");
    let addr = gw.public_addr;
    let answer = tokio::spawn(async move { send(addr, req).await });
    let first = pattern(10_000, 1);
    let second = pattern(20_000, 2);
    tx.send_data(Bytes::from(first.clone()))
        .await
        .expect("send");
    // The upstream sees the first part while the client still holds the second:
    // the gateway does not buffer whole bodies.
    let mut got = 0;
    while got < first.len() {
        got += up.frame().await;
    }
    assert_eq!(got, first.len());
    tx.send_data(Bytes::from(second.clone()))
        .await
        .expect("send");
    drop(tx);
    let a = answer.await.expect("client task");
    assert_eq!(a.status, StatusCode::OK);
    let expected: Vec<u8> = first.into_iter().chain(second).collect();
    assert_eq!(a.body.as_ref(), expected.as_slice());
}

#[tokio::test]
async fn response_body_streams_before_it_is_complete() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let stream = TcpStream::connect(gw.public_addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = guarded("response head", sender.send_request(get("/stream-out"))).await;
    let mut body = resp.expect("response").into_body();
    let first = guarded("first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("frame ok");
    assert_eq!(first.into_data().expect("data").as_ref(), b"first;");
    assert_eq!(up.arrival().await, "/stream-out");
    up.release();
    let rest = guarded("rest", body.collect())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(rest.as_ref(), b"second");
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarded_headers_added() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let req = Request::get("/h")
        .header("host", "shop.example:8443")
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "do not forward")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic abc")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-port", "1")
        .header("x-forwarded-proto", "https")
        .header("x-real-ip", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .header("flashgate-signature", "t=1,v1=00")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let a = send(gw.public_addr, req).await;
    assert_eq!(a.status, StatusCode::OK);
    let h = up.next_seen().await.headers;
    for gone in ["x-hop-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(h["x-end-to-end"], "kept");
    // A client that is not a trusted proxy cannot say where it comes from.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    for gone in ["x-forwarded-port", "forwarded", "flashgate-signature"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(h["x-forwarded-host"], "shop.example:8443");
    assert_eq!(
        h["host"], "shop.example:8443",
        "preserve_host defaults to true"
    );

    let a = send(gw.public_addr, get("/hop-response")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.get("x-upstream-secret").is_none());
    assert!(a.headers.get("keep-alive").is_none());
    assert_eq!(a.headers["x-kept"], "1");
}

#[tokio::test]
async fn host_is_the_upstreams_when_not_preserved() {
    let up = Upstream::start().await;
    let text = config_text(&up.url(), "") + "preserve_host = false\n";
    let gw = gateway(&text).await;
    send(gw.public_addr, get("/x")).await;
    let h = up.next_seen().await.headers;
    assert_eq!(h["host"], up.addr.to_string().as_str());
    assert_eq!(h["x-forwarded-host"], "shop.example");
}

#[tokio::test]
async fn upstream_path_prefix_is_prepended() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&format!("{}/api/", up.url()), "")).await;
    send(gw.public_addr, get("/v1/items?x=1")).await;
    let seen = up.next_seen().await;
    assert_eq!(
        seen.uri.path_and_query().map(|p| p.as_str()),
        Some("/api/v1/items?x=1")
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_and_forwarded_as_http11() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let req = Request::post("http://shop.example/h2?x=1")
        .body(Full::new(Bytes::from_static(b"over h2")))
        .expect("request");
    let a = send_h2(gw.public_addr, req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.as_ref(), b"over h2");
    let seen = up.next_seen().await;
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["host"], "shop.example");
    assert_eq!(seen.body.as_ref(), b"over h2");
}

/// HTTP/2 forbids a body on a HEAD's answer (the client resets the stream): the gateway's
/// own answers and proxied ones alike come with the GET's length and no DATA.
#[tokio::test]
async fn h2c_head_is_answered_without_a_body() {
    let up = Upstream::start().await;
    let sale = "[[sale]]\nsku = \"phone\"\nstock = 5\n";
    let gw = gateway(&config_text(&up.url(), sale)).await;
    let head = |path: &str| {
        Request::head(format!("http://shop.example{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let got = send_h2(gw.public_addr, get("http://shop.example/sale/phone")).await;
    assert_eq!(got.status, StatusCode::OK);
    for (path, status, length) in [
        ("/sale/phone", StatusCode::OK, Some(got.body.len())),
        ("/sale/phone/", StatusCode::NOT_FOUND, None),
        ("/sale/phone/token", StatusCode::METHOD_NOT_ALLOWED, None),
        ("/anything", StatusCode::OK, None),
    ] {
        let a = send_h2(gw.public_addr, head(path)).await;
        assert_eq!(a.status, status, "HEAD {path}");
        assert!(a.body.is_empty(), "HEAD {path} came with a body");
        if let Some(length) = length {
            assert_eq!(a.headers["content-length"], length.to_string().as_str());
        }
    }
}

#[tokio::test]
async fn upstream_down_is_502_upstream_unavailable() {
    let gw = gateway(&config_text(&dead_url().await, "")).await;
    let a = send(gw.public_addr, get("/anything")).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.json()["error"], "upstream_unavailable");
    assert_eq!(a.headers["content-type"], "application/json");
}

#[tokio::test]
async fn upstream_too_slow_is_504() {
    let up = Upstream::start().await;
    let text = config_text(&up.url(), "").replace("timeout = \"5s\"", "timeout = \"200ms\"");
    let gw = gateway(&text).await;
    let a = send(gw.public_addr, get("/hold")).await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.json()["error"], "upstream_timeout");
    up.release();
}

#[tokio::test]
async fn declared_oversized_body_is_413_and_never_reaches_upstream() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "body_limit = 1024")).await;
    let req = Request::post("/upload")
        .header("host", "shop.example")
        .body(Full::new(Bytes::from(vec![b'x'; 1025])))
        .expect("request");
    let a = send(gw.public_addr, req).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.json()["error"], "body_too_large");
    // The limit itself is fine, and the upstream's first request is this one, not the big one.
    let req = Request::post("/upload")
        .header("host", "shop.example")
        .body(Full::new(Bytes::from(vec![b'y'; 1024])))
        .expect("request");
    assert_eq!(send(gw.public_addr, req).await.status, StatusCode::OK);
    assert_eq!(up.next_seen().await.body.len(), 1024);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "body_limit = 1024")).await;
    let (mut tx, body) = channel_body();
    let req = Request::post("/upload")
        .header("host", "shop.example")
        .body(body)
        .expect("request");
    let addr = gw.public_addr;
    let answer = tokio::spawn(async move { send(addr, req).await });
    tx.send_data(Bytes::from(vec![b'a'; 1000]))
        .await
        .expect("send");
    tx.send_data(Bytes::from(vec![b'b'; 1000]))
        .await
        .expect("send");
    drop(tx);
    let a = answer.await.expect("client task");
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.json()["error"], "body_too_large");
}

#[tokio::test]
async fn admin_health_and_readiness_follow_the_upstream() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let a = send(gw.admin_addr, get("/healthz")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "ok");
    let a = send(gw.admin_addr, get("/readyz")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["ready"], true);
    assert_eq!(
        send(gw.admin_addr, get("/nope")).await.status,
        StatusCode::NOT_FOUND
    );

    let down = gateway(&config_text(&dead_url().await, "")).await;
    let a = send(down.admin_addr, get("/healthz")).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "liveness does not depend on the upstream"
    );
    // The upstream is every instance's: were its death to make instances unready, all of
    // them would leave the balancer at once. Readiness reports it instead.
    let a = send(down.admin_addr, get("/readyz")).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(a.json()["ready"], true);
    assert_eq!(a.json()["upstream"], "unreachable");
    assert!(a.json()["upstream_error"].is_string());

    // A stop that has begun is what makes an instance unready.
    down.stop();
    let a = send(down.admin_addr, get("/readyz")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["error"], "not_ready");
    assert!(a.headers.contains_key("retry-after"));
    down.shutdown();
}

#[tokio::test]
async fn responses_without_body_keep_their_status() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let req = Request::head("/x")
        .header("host", "shop.example")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let a = send(gw.public_addr, req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.is_empty());
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    for i in 0..20 {
        let a = send(gw.public_addr, get(&format!("/seq/{i}"))).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    // Sequential requests, each on a new client connection, share one upstream connection.
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upstream_closing_its_connection_is_not_an_error_for_the_next_request() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    for _ in 0..3 {
        let a = send(gw.public_addr, get("/close")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body.as_ref(), b"closing");
        assert!(
            a.headers.get("connection").is_none(),
            "hop-by-hop header leaked"
        );
        let a = send(gw.public_addr, get("/after-close")).await;
        assert_eq!(a.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let addr = gw.public_addr;
        tasks.push(tokio::spawn(async move {
            let payload = pattern(1000 + i as usize * 37, i);
            let req = Request::post(format!("/c/{i}"))
                .header("host", "shop.example")
                .body(Full::new(Bytes::from(payload.clone())))
                .expect("request");
            let a = send(addr, req).await;
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(a.body.as_ref(), payload.as_slice(), "answer {i} mixed up");
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}
