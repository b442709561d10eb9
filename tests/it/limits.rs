//! Protection limits: the connection cap, the header read timeout, and silent clients.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET /ping HTTP/1.1\r\nhost: shop.example\r\n\r\n";

/// Sends one request on an open keep-alive connection and reads the head of the answer.
async fn request_on(stream: &mut TcpStream) -> String {
    stream.write_all(REQUEST).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = guarded("answer", stream.read(&mut buf))
        .await
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_at_once() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "max_connections = 2")).await;
    let mut a = TcpStream::connect(gw.public_addr).await.expect("connect");
    let mut b = TcpStream::connect(gw.public_addr).await.expect("connect");
    // Both are served: each got a real answer, so both hold a slot.
    assert!(request_on(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(request_on(&mut b).await.starts_with("HTTP/1.1 200"));

    // The third is answered 503 and closed without waiting for its request.
    let mut c = TcpStream::connect(gw.public_addr).await.expect("connect");
    let refused = read_until_closed(&mut c).await;
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "third connection was not refused: {refused:?}"
    );
    assert!(refused.contains("retry-after: 1"), "{refused:?}");
    assert!(
        refused.contains(r#""error":"too_many_connections""#),
        "{refused:?}"
    );

    // The held connections keep working, and a freed slot is usable again.
    assert!(request_on(&mut a).await.starts_with("HTTP/1.1 200"));
    drop(b);
    let served = guarded("a slot to free up", async {
        loop {
            let mut d = TcpStream::connect(gw.public_addr).await.expect("connect");
            d.write_all(REQUEST).await.expect("write");
            let mut buf = vec![0u8; 4096];
            if let Ok(n) = d.read(&mut buf).await {
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                if head.starts_with("HTTP/1.1 200") {
                    return head;
                }
            }
            // The server frees the slot when it sees b's close; poll until it has.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(served.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn slowloris_header_is_cut_off() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "header_timeout = \"300ms\"")).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    // Half a header, then silence.
    s.write_all(b"GET / HTTP/1.1\r\nhost: shop.example\r\nx-slow: ")
        .await
        .expect("write");
    let answer = read_until_closed(&mut s).await;
    assert!(
        !answer.contains(" 200 "),
        "a request with an unfinished header was served: {answer:?}"
    );
}

#[tokio::test]
async fn silent_connection_is_closed() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "header_timeout = \"300ms\"")).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    assert_eq!(read_until_closed(&mut s).await, "");
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "header_timeout = \"300ms\"")).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    assert!(request_on(&mut s).await.starts_with("HTTP/1.1 200"));
    read_until_closed(&mut s).await;
}

#[tokio::test]
async fn slow_client_does_not_block_others() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "header_timeout = \"30s\"")).await;
    // A client that connects and says nothing must not hold up the accept loop.
    let _silent = TcpStream::connect(gw.public_addr).await.expect("connect");
    let _partial = {
        let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
        s.write_all(b"PRI * HTTP/2").await.expect("write");
        s
    };
    let a = send(gw.public_addr, get("/ping")).await;
    assert_eq!(a.status, StatusCode::OK);
}
