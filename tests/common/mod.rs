//! Shared test support: a real upstream on a loopback port, a gateway in process, and small
//! HTTP clients. Everything binds 127.0.0.1 on port 0.

#![allow(dead_code)] // each test binary uses its own subset

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flashgate::{Config, Gateway};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex, Semaphore};

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

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A test backend. Routes:
/// - `/hold`: reports arrival, then answers only once the test calls [`Upstream::release`];
/// - `/stream-in`: reports each request body frame's size as it arrives, then echoes;
/// - `/stream-out`: sends "first;", waits for a release, then sends "second";
/// - `/hop-response`: answers with hop-by-hop headers the gateway must strip;
/// - `/close`: answers with `Connection: close`, so the upstream closes the connection;
/// - `/reject`: answers 400, a permanent refusal under the backend contract;
/// - `/early`: reports arrival and answers 401 without reading the request body;
/// - `/orders`: records and echoes, or answers `orders_status` when that is set;
/// - anything else: records the request and echoes its body.
pub struct Upstream {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// When non-zero, `POST /orders` is answered with this status instead of 200.
    pub orders_status: Arc<AtomicU16>,
    seen: Mutex<mpsc::UnboundedReceiver<Seen>>,
    arrivals: Mutex<mpsc::UnboundedReceiver<String>>,
    frames: Mutex<mpsc::UnboundedReceiver<usize>>,
    release: Arc<Semaphore>,
}

#[derive(Clone)]
struct UpstreamState {
    orders_status: Arc<AtomicU16>,
    seen: mpsc::UnboundedSender<Seen>,
    arrivals: mpsc::UnboundedSender<String>,
    frames: mpsc::UnboundedSender<usize>,
    release: Arc<Semaphore>,
}

type UpBody = http_body_util::Either<Full<Bytes>, Channel<Bytes>>;

impl Upstream {
    /// Starts the upstream on a free loopback port.
    pub async fn start() -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let (arr_tx, arr_rx) = mpsc::unbounded_channel();
        let (frames_tx, frames_rx) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let orders_status = Arc::new(AtomicU16::new(0));
        let state = UpstreamState {
            orders_status: orders_status.clone(),
            seen: seen_tx,
            arrivals: arr_tx,
            frames: frames_tx,
            release: release.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(upstream_route(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Arc::new(Self {
            addr,
            connections,
            orders_status,
            seen: Mutex::new(seen_rx),
            arrivals: Mutex::new(arr_rx),
            frames: Mutex::new(frames_rx),
            release,
        })
    }

    /// The next request the upstream recorded.
    pub async fn next_seen(&self) -> Seen {
        next(&self.seen, "upstream request").await
    }

    /// Every request recorded and not read yet, without waiting for more.
    pub async fn drain_seen(&self) -> Vec<Seen> {
        let mut rx = self.seen.lock().await;
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Waits until a held request (`/hold`, `/stream-out`) has reached the upstream; returns its path.
    pub async fn arrival(&self) -> String {
        next(&self.arrivals, "arrival at the upstream").await
    }

    /// Waits until the upstream has received one more request body frame; returns its size.
    pub async fn frame(&self) -> usize {
        next(&self.frames, "body frame at the upstream").await
    }

    /// Lets one held request answer.
    pub fn release(&self) {
        self.release.add_permits(1);
    }

    /// `http://addr` of this upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn next<T>(rx: &Mutex<mpsc::UnboundedReceiver<T>>, what: &str) -> T {
    guarded(what, async {
        rx.lock().await.recv().await.expect("upstream running")
    })
    .await
}

async fn upstream_route(state: UpstreamState, req: Request<Incoming>) -> Response<UpBody> {
    let path = req.uri().path().to_owned();
    if path == "/early" {
        // Answers before reading the upload, as a backend refusing it unread would.
        let _ = state.arrivals.send(path);
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(UpBody::Left(Full::new(Bytes::from_static(b"no"))))
            .expect("response");
    }
    let (parts, mut body) = req.into_parts();
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The gateway aborted the body (e.g. over the limit): nothing to answer.
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(UpBody::Left(Full::new(Bytes::from_static(b"aborted body"))))
                .expect("response");
        };
        if let Ok(data) = frame.into_data() {
            if path == "/stream-in" {
                let _ = state.frames.send(data.len());
            }
            collected.extend_from_slice(&data);
        }
    }
    let body = Bytes::from(collected);
    let _ = state.seen.send(Seen {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let forced = state.orders_status.load(Ordering::SeqCst);
    if path == "/orders" && forced != 0 {
        return Response::builder()
            .status(forced)
            .body(UpBody::Left(Full::new(Bytes::from_static(
                b"backend says no",
            ))))
            .expect("response");
    }
    match path.as_str() {
        "/hold" => {
            let _ = state.arrivals.send(path.clone());
            let permit = state.release.acquire().await.expect("semaphore open");
            permit.forget();
            Response::new(UpBody::Left(Full::new(Bytes::from_static(
                b"held and released",
            ))))
        }
        "/stream-out" => {
            let (mut tx, chan) = Channel::<Bytes>::new(4);
            let release = state.release.clone();
            let arrivals = state.arrivals.clone();
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from_static(b"first;")).await;
                let _ = arrivals.send("/stream-out".to_owned());
                if let Ok(p) = release.acquire().await {
                    p.forget();
                }
                let _ = tx.send_data(Bytes::from_static(b"second")).await;
            });
            Response::new(UpBody::Right(chan))
        }
        "/reject" => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(UpBody::Left(Full::new(Bytes::from_static(
                b"no such product",
            ))))
            .expect("response"),
        "/close" => Response::builder()
            .header("connection", "close")
            .body(UpBody::Left(Full::new(Bytes::from_static(b"closing"))))
            .expect("response"),
        "/hop-response" => Response::builder()
            .header("connection", "x-upstream-secret")
            .header("x-upstream-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "1")
            .body(UpBody::Left(Full::new(Bytes::from_static(b"ok"))))
            .expect("response"),
        _ => Response::builder()
            .header("x-upstream", "echo")
            .body(UpBody::Left(Full::new(body)))
            .expect("response"),
    }
}

/// Config text for a gateway on free loopback ports in front of `upstream_url`, plus `extra`
/// TOML lines for the `[server]` section.
pub fn config_text(upstream_url: &str, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nthreads = 1\n{server_extra}\n\
         [upstream]\nurl = \"{upstream_url}\"\ntimeout = \"5s\"\n"
    )
}

/// Starts a gateway in this runtime from config text.
pub async fn gateway(text: &str) -> Gateway {
    let config = Config::from_toml(text, "test", &[]).expect("test config is valid");
    Gateway::start(config).await.expect("gateway starts")
}

/// A URL to something no one listens on: bind a port, then free it.
pub async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
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

/// Builds a frame of data.
pub fn data(b: &[u8]) -> Frame<Bytes> {
    Frame::data(Bytes::copy_from_slice(b))
}

/// A gateway in front of `up` with the given extra TOML (sections after `[upstream]`).
pub async fn sale_gateway(up: &Upstream, extra: &str) -> Gateway {
    gateway(&format!("{}{extra}", config_text(&up.url(), ""))).await
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

/// `POST /sale/{sku}/token` as `user`, whatever the answer.
pub async fn ask_token(addr: SocketAddr, sku: &str, user: &str) -> Answer {
    send(
        addr,
        request(
            "POST",
            &format!("/sale/{sku}/token"),
            &[("x-user-id", user)],
            "",
        ),
    )
    .await
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

/// `POST /sale/{sku}/token` as `user`; returns the token text.
pub async fn token_for(addr: SocketAddr, sku: &str, user: &str) -> String {
    let a = ask_token(addr, sku, user).await;
    assert_eq!(a.status, StatusCode::OK, "token for {user}: {:?}", a.body);
    a.json()["token"].as_str().expect("token field").to_owned()
}

/// `POST /sale/{sku}/order` as `user` with `token` in the header.
pub async fn order(addr: SocketAddr, sku: &str, user: &str, token: &str) -> Answer {
    send(
        addr,
        request(
            "POST",
            &format!("/sale/{sku}/order"),
            &[("x-user-id", user), ("x-sale-token", token)],
            "",
        ),
    )
    .await
}
