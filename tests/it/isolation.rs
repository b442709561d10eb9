//! No client can hurt another through the proxy: each attack found by a probe against the
//! release binary, replayed here against the limit that now stops it.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw upstream: `/early` is answered 401 at once while the upload is left unread and
/// the connection open (as a backend refusing an upload may do); anything else 200.
async fn raw_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"POST /early ") {
                    let _ = s
                        .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno")
                        .await;
                    // Hold the connection, reading nothing more.
                    std::future::pending::<()>().await;
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upload_the_upstream_refused_unread_does_not_hold_the_next_request() {
    let up = raw_upstream().await;
    let gw = gateway(&config_text(&format!("http://{up}"), "")).await;
    let addr = gw.public_addr;
    // A slow upload: the backend answers 401 before reading it; the client keeps sending.
    let (mut tx, body) = channel_body();
    let req = Request::post("/early")
        .header("host", "shop.example")
        .body(body)
        .expect("request");
    tx.send_data(Bytes::from_static(b"part one"))
        .await
        .expect("send");
    let a = send(addr, req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The next user's request must not take the connection still carrying that upload
    // (it would wait on it until upstream.timeout and get 504).
    let a = send(addr, get("/next")).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body.as_ref(), b"ok");
    drop(tx);
}

/// An h2c client connection to `addr`, its connection task spawned.
async fn h2_client(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    (sender, tokio::spawn(conn))
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "header_timeout = \"200ms\"")).await;
    let (mut sender, conn) = h2_client(gw.public_addr).await;
    // One request, then nothing: the connection is closed after the idle timeout.
    let resp = sender.send_request(get("/x")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    guarded("the idle h2 connection to close", conn)
        .await
        .expect("join")
        .expect("closed cleanly with GOAWAY");
    let m = metrics(gw.admin_addr).await;
    assert!(
        m.contains("flashgate_h2_goaway_total{reason=\"idle\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_client_that_keeps_cancelling_streams_is_sent_goaway() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "h2_max_cancelled_streams = 5")).await;
    let (mut sender, conn) = h2_client(gw.public_addr).await;
    // Paced rapid reset: one stream at a time, cancelled once the upstream has it.
    for _ in 0..5 {
        let mut pending = Box::pin(sender.send_request(get("/hold")));
        tokio::select! {
            _ = &mut pending => panic!("a held request was answered"),
            path = up.arrival() => assert_eq!(path, "/hold"),
        }
        drop(pending);
    }
    guarded("GOAWAY to end the connection", conn)
        .await
        .expect("join")
        .expect("closed cleanly with GOAWAY");
    let m = metrics(gw.admin_addr).await;
    assert!(
        m.contains("flashgate_h2_goaway_total{reason=\"cancelled_streams\"} 1"),
        "{m}"
    );
}

async fn metrics(admin: std::net::SocketAddr) -> String {
    String::from_utf8_lossy(&send(admin, get("/metrics")).await.body).into_owned()
}

#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "max_connections_per_ip = 2")).await;
    let a = TcpStream::connect(gw.public_addr).await.expect("connect");
    let b = TcpStream::connect(gw.public_addr).await.expect("connect");
    // Both connections are served (so both hold their place) before the third arrives.
    let mut held = Vec::new();
    for mut s in [a, b] {
        s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = guarded("answer", s.read(&mut buf)).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut c = TcpStream::connect(gw.public_addr).await.expect("connect");
    let refused = read_until_closed(&mut c).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too_many_connections"), "{refused}");
    let m = metrics(gw.admin_addr).await;
    assert!(
        m.contains("flashgate_connections_refused_total{listener=\"public\",reason=\"per_ip\"} 1"),
        "{m}"
    );

    // A trusted proxy carries many clients: it is exempt.
    let gw = gateway(&config_text(
        &up.url(),
        "max_connections_per_ip = 1\ntrusted_proxies = [\"127.0.0.1\"]",
    ))
    .await;
    let _a = TcpStream::connect(gw.public_addr).await.expect("connect");
    let text = raw(
        gw.public_addr,
        b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn upstream_connections_are_bounded() {
    let up = Upstream::start().await;
    let gw = gateway(&format!(
        "{}max_connections = 2\npool_size = 2\n",
        config_text(&up.url(), "")
    ))
    .await;
    let addr = gw.public_addr;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { send(addr, get("/hold")).await }))
        .collect();
    for _ in 0..2 {
        up.arrival().await;
    }
    let a = send(addr, get("/x")).await;
    assert_refused(&a, StatusCode::SERVICE_UNAVAILABLE, "upstream_busy");
    assert!(a.headers.contains_key("retry-after"));
    up.release();
    up.release();
    for h in held {
        assert_eq!(h.await.expect("join").status, StatusCode::OK);
    }
    let a = send(addr, get("/x")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unterminated_header_block_is_cut_off_at_the_limit() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "max_header_size = 8192")).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
    // Past the limit the gateway stops reading: later writes may fail, which is the point.
    for _ in 0..20 {
        if s.write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    let text = read_until_closed(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
    // A complete header block over the (default) limit, sent in one write, is refused too:
    // hyper's read buffer alone would let one read's worth more through.
    let gw = gateway(&config_text(&up.url(), "")).await;
    // Exactly at the limit passes; one byte more does not.
    let head = "GET /exact HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: \r\n\r\n";
    for (extra, want) in [(0, "HTTP/1.1 200"), (1, "HTTP/1.1 431")] {
        let pad = "p".repeat(65_536 - head.len() + extra);
        let text = raw(
            gw.public_addr,
            head.replace("X-Pad: ", &format!("X-Pad: {pad}")).as_bytes(),
        )
        .await;
        assert!(
            text.starts_with(want),
            "{extra}: {}",
            &text[..text.len().min(80)]
        );
    }
    let pad = "p".repeat(70_000);
    for (headers, name) in [
        (format!("X-Pad: {pad}\r\n"), "one long"),
        ("X-P: 0123456789\r\n".repeat(4000), "many"),
    ] {
        let text = raw(
            gw.public_addr,
            format!("GET / HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 431"), "{name}: {text:?}");
    }
    let seen = up.drain_seen().await;
    assert!(
        seen.iter().all(|s| s.uri.path() == "/exact"),
        "only the block at the limit passed"
    );
}

#[tokio::test]
async fn a_response_framed_twice_reaches_the_client_by_its_chunks() {
    // A raw upstream that sends both Transfer-Encoding and a stale Content-Length.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                    .await;
            });
        }
    });
    let gw = gateway(&config_text(&format!("http://{up}"), "")).await;
    let a = send(gw.public_addr, get("/x")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.as_ref(), b"hello");
    assert_ne!(
        a.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"100"[..])
    );
}

#[tokio::test]
async fn the_host_is_one_valid_value_and_the_target_authority_wins() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let addr = gw.public_addr;
    for bad in [
        "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a/b?c#d\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: user@a\r\nConnection: close\r\n\r\n",
    ] {
        let text = raw(addr, bad.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{bad:?}: {text}");
    }
    assert!(up.drain_seen().await.is_empty());
    let text = raw(
        addr,
        b"GET http://real.example/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(up.next_seen().await.headers["host"], "real.example");
    // h2: :authority wins over a Host header, and cookie fields arrive joined.
    let req = Request::get("http://real.example/x")
        .header("host", "other.example")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let a = send_h2(addr, req).await;
    assert_eq!(a.status, StatusCode::OK);
    let h = up.next_seen().await.headers;
    assert_eq!(h["host"], "real.example");
    assert_eq!(h["cookie"], "a=1; b=2");
}

#[tokio::test]
async fn a_connection_option_cannot_strip_the_identity_header() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let req = request(
        "GET",
        "/x",
        &[("connection", "x-user-id"), ("x-user-id", "alice")],
        "",
    );
    let a = send(gw.public_addr, req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(up.next_seen().await.headers["x-user-id"], "alice");
}

/// One h2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn a_client_that_ignores_pings_is_closed_after_goaway() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(
        &up.url(),
        "h2_max_cancelled_streams = 3\nheader_timeout = \"300ms\"",
    ))
    .await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    s.write_all(&hello).await.expect("preface");
    // GET /hold for authority t, HPACK by hand: :method GET, :scheme http, :path, :authority.
    let mut block = vec![0x82, 0x86, 0x04, 5];
    block.extend_from_slice(b"/hold");
    block.extend_from_slice(&[0x01, 1, b't']);
    let (mut rd, mut wr) = s.into_split();
    // Whatever the server sends is read and dropped: no SETTINGS or PING is acknowledged.
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    });
    for i in 0..3u32 {
        let stream = 1 + 2 * i;
        wr.write_all(&frame(0x1, 0x5, stream, &block))
            .await
            .expect("headers");
        assert_eq!(up.arrival().await, "/hold");
        // RST_STREAM, CANCEL.
        wr.write_all(&frame(0x3, 0, stream, &8u32.to_be_bytes()))
            .await
            .expect("reset");
    }
    // Past the limit a new stream is refused, never proxied.
    let mut echo = vec![0x82, 0x86, 0x04, 2];
    echo.extend_from_slice(b"/x");
    echo.extend_from_slice(&[0x01, 1, b't']);
    wr.write_all(&frame(0x1, 0x5, 7, &echo))
        .await
        .expect("headers");
    guarded("the connection to close without a PING answer", reader)
        .await
        .expect("reader");
    let seen = up.drain_seen().await;
    assert!(
        seen.iter().all(|s| s.uri.path() != "/x"),
        "a stream past the limit was proxied"
    );
}

#[tokio::test]
async fn an_upload_that_stops_does_not_hold_an_upstream_connection() {
    let up = raw_upstream().await;
    let gw = gateway(&format!(
        "{}max_connections = 1\npool_size = 1\n",
        config_text(&format!("http://{up}"), "body_timeout = \"300ms\"")
    ))
    .await;
    let addr = gw.public_addr;
    // Declares 100000 bytes, sends ten, then nothing; the upstream answers it early.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n0123456789")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = guarded("the early answer", s.read(&mut buf))
        .await
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 401"));
    // The only upstream connection is freed once the body is overdue, while the client
    // still holds its own connection open.
    let served = guarded("the upstream connection to be freed", async {
        loop {
            let a = send(addr, get("/next")).await;
            if a.status == StatusCode::OK {
                return a;
            }
            assert_refused(&a, StatusCode::SERVICE_UNAVAILABLE, "upstream_busy");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(served.body.as_ref(), b"ok");
    drop(s);
}
