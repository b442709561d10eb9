//! HTTP/1 connections set aside between requests (no buffers while the client thinks):
//! counted in `flashgate_connections_idle`, and to the client a keep-alive connection like
//! any other: the next request answered, pipelined ones in order, a request arriving in
//! pieces read whole, a body the handler never read never taken for a request, and a
//! set-aside connection closed at the stop.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const SALE: &str = "[[sale]]\nsku = \"phone\"\nstock = 5\n";
const GET_SALE: &[u8] = b"GET /sale/phone HTTP/1.1\r\nhost: shop.example\r\n\r\n";

/// Reads one response (head and `content-length` body) from `s`: its status and body.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String) {
    guarded("a response", async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head[9..12].parse().expect("a status");
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into();
                    buf.drain(..end + 4 + length);
                    return (status, body);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before a whole response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

async fn idle_count(admin: SocketAddr) -> f64 {
    value(&scrape(admin).await, "flashgate_connections_idle").unwrap_or(-1.0)
}

async fn wait_idle(admin: SocketAddr, n: f64) {
    until("connections set aside", || async {
        idle_count(admin).await == n
    })
    .await;
}

/// A gateway with `server` lines of config, and a connection to it that asked once and was
/// set aside (with its read buffer).
async fn set_aside_once(server: &str) -> (flashgate::Gateway, TcpStream, Vec<u8>) {
    let dead = dead_url().await;
    let gw = gateway(&format!("{}{SALE}", config_text(&dead, server))).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    let mut buf = Vec::new();
    s.write_all(GET_SALE).await.expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 200);
    wait_idle(gw.admin_addr, 1.0).await;
    (gw, s, buf)
}

#[tokio::test]
async fn a_set_aside_connection_serves_its_next_requests_as_before() {
    let dead = dead_url().await;
    let gw = gateway(&format!("{}{SALE}", config_text(&dead, ""))).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    let mut buf = Vec::new();

    // One request, then the connection waits idle: set aside.
    s.write_all(GET_SALE).await.expect("write");
    let (status, body) = response(&mut s, &mut buf).await;
    assert_eq!(status, 200);
    assert!(body.contains("phone"), "{body}");
    wait_idle(gw.admin_addr, 1.0).await;

    // The next request on it is answered.
    s.write_all(GET_SALE).await.expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 200);
    wait_idle(gw.admin_addr, 1.0).await;

    // Three pipelined in one write: three answers, in order.
    let pipelined = [
        GET_SALE,
        b"GET /sale/none HTTP/1.1\r\nhost: x\r\n\r\n",
        GET_SALE,
    ]
    .concat();
    s.write_all(&pipelined).await.expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 200);
    assert_eq!(response(&mut s, &mut buf).await.0, 404);
    assert_eq!(response(&mut s, &mut buf).await.0, 200);
    wait_idle(gw.admin_addr, 1.0).await;

    // A request in two pieces, the connection set aside before the first.
    s.write_all(&GET_SALE[..10]).await.expect("write");
    s.write_all(&GET_SALE[10..]).await.expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 200);

    // A body the handler never reads (an order without its token, refused at once) is
    // drained, never taken for a request: the next answer is the next request's.
    let smuggled = b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    let post = format!(
        "POST /sale/phone/order HTTP/1.1\r\nhost: x\r\nx-user-id: u1\r\ncontent-length: {}\r\n\r\n",
        smuggled.len()
    );
    s.write_all(&[post.as_bytes(), smuggled].concat())
        .await
        .expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 400);
    s.write_all(GET_SALE).await.expect("write");
    let (status, body) = response(&mut s, &mut buf).await;
    assert_eq!(
        status, 200,
        "the sale's state, not an answer to /smuggled: {body}"
    );
    assert!(body.contains("phone"), "{body}");
    wait_idle(gw.admin_addr, 1.0).await;

    // An order, its body read whole: the connection is set aside after it too.
    let token = token_for(gw.public_addr, "phone", "u2").await;
    let body = "{\"quantity\": 1}";
    let post = format!(
        "POST /sale/phone/order HTTP/1.1\r\nhost: x\r\nx-user-id: u2\r\nx-sale-token: {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(post.as_bytes()).await.expect("write");
    let (status, answer) = response(&mut s, &mut buf).await;
    assert!(status < 300, "{status} {answer}");
    wait_idle(gw.admin_addr, 1.0).await;

    // Closed by the client: no longer counted.
    drop(s);
    wait_idle(gw.admin_addr, 0.0).await;
    gw.shutdown();
}

/// A client that idles longer than `header_timeout` (within `keepalive_timeout`) and then
/// asks again is answered: its next head is timed from when it started, as hyper times one.
/// Timed from the set-aside, the head was late before it came, and the connection closed
/// with the request unread (the load test's clients saw it as "no answer").
#[tokio::test]
async fn a_request_after_an_idle_longer_than_the_header_timeout_is_answered() {
    let (gw, mut s, mut buf) =
        set_aside_once("header_timeout = \"200ms\"\nkeepalive_timeout = \"1h\"").await;
    // Idle past the header timeout: no bound on how long, nothing races it.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    s.write_all(GET_SALE).await.expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 200);
    gw.shutdown();
}

/// A refused request's body that has not all come when it is answered: what comes after
/// the answer is never read as a request. hyper gives up on the body and closes; had the
/// connection been set aside, a new session would read the rest as a request.
async fn body_after_the_answer_is_never_a_request(sent_with_head: usize) {
    let dead = dead_url().await;
    let gw = gateway(&format!("{}{SALE}", config_text(&dead, ""))).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    let mut buf = Vec::new();
    // A token asked for (an answer that never reads the body).
    let smuggled = b"GET /sale/phone HTTP/1.1\r\nhost: x\r\n\r\n";
    let body = [&b"{\"pad\": 1}"[..], smuggled].concat();
    let head = format!(
        "POST /sale/phone/token HTTP/1.1\r\nhost: x\r\nx-user-id: u1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (now, later) = body.split_at(sent_with_head);
    s.write_all(&[head.as_bytes(), now].concat())
        .await
        .expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 200);
    let _ = s.write_all(later).await;
    let mut rest = Vec::new();
    let read = guarded("the close", s.read_to_end(&mut rest)).await;
    assert!(
        rest.is_empty(),
        "no answer to the body: {:?} {read:?}",
        String::from_utf8_lossy(&rest)
    );
    gw.shutdown();
}

#[tokio::test]
async fn a_body_still_to_come_when_refused_is_never_read_as_a_request() {
    body_after_the_answer_is_never_a_request(0).await;
}

/// Part of the body came with the head: hyper's one try at draining falls short.
#[tokio::test]
async fn the_rest_of_a_body_half_come_when_refused_is_never_read_as_a_request() {
    body_after_the_answer_is_never_a_request(10).await;
}

async fn drained_and_set_aside(pad: usize, body: usize) {
    let dead = dead_url().await;
    let gw = gateway(&format!("{}{SALE}", config_text(&dead, ""))).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    let mut buf = Vec::new();
    let head = format!(
        "POST /sale/phone/token HTTP/1.1\r\nhost: x\r\nx-user-id: u1\r\nx-pad: {}\r\ncontent-length: {body}\r\n\r\n",
        "a".repeat(pad)
    );
    s.write_all(&[head.as_bytes(), &vec![b'y'; body]].concat())
        .await
        .expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 200);
    wait_idle(gw.admin_addr, 1.0).await;
    s.write_all(GET_SALE).await.expect("write");
    assert_eq!(response(&mut s, &mut buf).await.0, 200);
    gw.shutdown();
}

#[tokio::test]
async fn a_connection_whose_unread_body_was_drained_is_set_aside() {
    drained_and_set_aside(1, 16).await;
}

/// The body's end beyond hyper's first read (8 KB): hyper drains it by reading the socket
/// once more, after the answer went out; that read is the body's, not a next request's.
#[tokio::test]
async fn a_connection_whose_unread_body_was_drained_from_the_socket_is_set_aside() {
    drained_and_set_aside(7900, 400).await;
}

#[tokio::test]
async fn part_of_a_head_after_a_set_aside_does_not_hold_the_stop() {
    let (gw, mut s, _) = set_aside_once(
        "shutdown_grace = \"0s\"\nheader_timeout = \"1h\"\nshutdown_timeout = \"1h\"",
    )
    .await;
    // The client starts its next request, then the gateway stops: a head not yet whole is
    // no request in flight, and the stop does not wait an hour for the rest of it.
    s.write_all(b"GET /sa").await.expect("write");
    wait_idle(gw.admin_addr, 0.0).await;
    gw.shutdown();
    guarded("the stop", gw.wait()).await.expect("stopped");
    let mut rest = Vec::new();
    let _ = guarded("the close", s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn set_aside_connections_close_at_the_stop() {
    let dead = dead_url().await;
    let gw = gateway(&format!(
        "{}{SALE}",
        config_text(&dead, "shutdown_grace = \"0s\"\nheader_timeout = \"1h\"")
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
        let mut buf = Vec::new();
        s.write_all(GET_SALE).await.expect("write");
        assert_eq!(response(&mut s, &mut buf).await.0, 200);
        held.push(s);
    }
    wait_idle(gw.admin_addr, 3.0).await;
    // The stop ends (within the test's guard, not after an hour's idle time) and each
    // connection reads its close.
    gw.shutdown();
    guarded("the stop", gw.wait()).await.expect("stopped");
    for mut s in held {
        let mut rest = [0u8; 16];
        let n = guarded("the close", s.read(&mut rest)).await.unwrap_or(0);
        assert_eq!(n, 0, "closed, not answered");
    }
}
