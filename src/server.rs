//! Accepting connections: the connection limit, protocol detection (HTTP/1.1 or h2c with
//! prior knowledge), the header read timeout, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::response::GatewayResponse;

/// Answers one request; implemented by the public gateway and the admin API.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Produces the response to `req`, which arrived from `peer`.
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> impl Future<Output = GatewayResponse> + Send;
}

/// The client at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its IP formatted as a header value, once per connection rather than per request.
    pub ip: HeaderValue,
}

impl Peer {
    /// Describes the client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { addr, ip }
    }
}

/// Per-listener protection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Time for a client to send a complete request header (and to start talking at all).
    pub header_timeout: Duration,
    /// After shutdown starts, in-flight requests get this long to finish.
    pub shutdown_timeout: Duration,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The raw HTTP/1.1 answer written, best effort, to a connection over the limit before it
/// is closed; no HTTP machinery is spent on a connection that is refused.
fn too_many_connections() -> Vec<u8> {
    let e = GatewayError::TooManyConnections;
    let body = e.body();
    let mut out = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        e.status(),
        e.retry_after().unwrap_or(1),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Serves `listener` with `handler` until `shutdown` fires, then stops accepting and lets
/// in-flight requests finish for up to `limits.shutdown_timeout`. `open`, if given, counts
/// the connections being served.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    open: Option<prometheus::IntGauge>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusal = too_many_connections();
    let graceful = GracefulShutdown::new();
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .max_concurrent_streams(256);

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Refuse at once: a crowd must not pile up in accepted-but-unserved sockets.
            let _ = stream.try_write(&refusal);
            tracing::debug!(%peer, "connection refused: max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            handler: handler.clone(),
            h1: h1.clone(),
            h2: h2.clone(),
            watcher: graceful.watcher(),
            header_timeout: limits.header_timeout,
        };
        let open = open.clone();
        if let Some(g) = &open {
            g.inc();
        }
        tokio::spawn(async move {
            conn.run(stream, peer).await;
            drop(permit);
            if let Some(g) = open {
                g.dec();
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = %humantime::format_duration(limits.shutdown_timeout),
            "shutdown deadline passed with requests still in flight; closing them"
        );
    }
}

/// What one connection's task needs; cloned from the listener's settings on accept.
struct Conn<H> {
    handler: H,
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    watcher: Watcher,
    header_timeout: Duration,
}

impl<H: Handler> Conn<H> {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        let protocol = match sniff(&stream, self.header_timeout).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection dropped before a request");
                return;
            }
        };
        let handler = self.handler;
        let client = Peer::new(peer);
        let svc = service_fn(move |req| {
            let handler = handler.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(handler.handle(req, &client).await) }
        });
        let io = TokioIo::new(stream);
        let result = match protocol {
            Protocol::Http1 => self.watcher.watch(self.h1.serve_connection(io, svc)).await,
            Protocol::Http2 => self.watcher.watch(self.h2.serve_connection(io, svc)).await,
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

enum Protocol {
    Http1,
    Http2,
}

/// Peeks at the first bytes to tell HTTP/1.1 from an h2c prior-knowledge preface, giving a
/// silent client no more than `deadline` (hyper's own header timeout starts after this).
async fn sniff(stream: &TcpStream, deadline: Duration) -> io::Result<Option<Protocol>> {
    let detect = async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Ok(Some(Protocol::Http1));
            }
            if n == H2_PREFACE.len() {
                return Ok(Some(Protocol::Http2));
            }
            // A partial preface: peek would return the same bytes at once, so wait a moment
            // for the rest instead of spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    match tokio::time::timeout(deadline, detect).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no request within the header timeout",
        )),
    }
}
