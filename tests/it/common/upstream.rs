//! The test backend: a real HTTP/1.1 upstream on a loopback port that records what reaches
//! it and answers by route.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex, Semaphore};

use super::client::guarded;

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

/// A URL to something no one listens on: bind a port, then free it.
pub async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}
