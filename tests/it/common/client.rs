//! Small HTTP clients for tests: one request on a fresh connection (HTTP/1.1 or h2c), raw
//! bytes, bodies fed frame by frame, and the bound on every wait.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Upper bound for any single wait in a test, so a bug fails the test instead of hanging it.
pub const GUARD: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it has not finished within [`GUARD`].
pub async fn guarded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {GUARD:?}"),
    }
}

/// Reads until the server closes the connection; returns what it sent.
pub async fn read_until_closed(stream: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    // A reset after the server closes is also a close.
    let _ = guarded(
        "server closing the connection",
        stream.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes `bytes` on a fresh connection and reads until the server closes it.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_until_closed(&mut s).await
}

/// A whole response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one HTTP/1.1 request on a fresh connection and reads the whole answer.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Answer
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    guarded("request through the gateway", async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("response");
        read(resp).await
    })
    .await
}

/// Sends one request over h2c with prior knowledge.
pub async fn send_h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    guarded("h2 request through the gateway", async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("response");
        read(resp).await
    })
    .await
}

async fn read(resp: Response<Incoming>) -> Answer {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET path` with a Host header.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "shop.example")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A request body fed frame by frame by the test.
pub fn channel_body() -> (http_body_util::channel::Sender<Bytes>, Channel<Bytes>) {
    Channel::new(4)
}

/// A request with a method, path, headers and body.
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "shop.example");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("request")
}

/// Asserts a JSON refusal with this status and error code.
#[track_caller]
pub fn assert_refused(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(
        (a.status, a.json()["error"].as_str().unwrap_or("")),
        (status, code),
        "{:?}",
        String::from_utf8_lossy(&a.body)
    );
}

/// Polls `what` until it holds (bounded by [`guarded`]).
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    guarded(what, async {
        while !check().await {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// `GET /metrics` on `admin`: the Prometheus text.
pub async fn scrape(admin: SocketAddr) -> String {
    let a = send(admin, get("/metrics")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    String::from_utf8(a.body.to_vec()).expect("utf-8")
}

/// The value of `series` (name and labels, as exported) in a scrape.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}
