//! One connection from accept to close: the PROXY header, the per-address cap, TLS or
//! h2c detection, then HTTP with the limits no single client may exceed: streams counted
//! against the listener's request bound, an idle h2 connection closed, and GOAWAY for a
//! client that keeps cancelling streams (paced rapid reset).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::{ConnectionLimits, Handler, IpSlot, Peer, Refused, Shared};
use crate::error::GatewayError;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP/1 settings of a listener.
pub(super) fn h1_builder(limits: &ConnectionLimits) -> hyper::server::conn::http1::Builder {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // An unterminated header block may hold this much, not hyper's ~400 KB default.
        .max_buf_size(limits.max_header_size.max(8192))
        .keep_alive(true);
    h1
}

/// The h2 settings of a listener.
pub(super) fn h2_builder(
    limits: &ConnectionLimits,
) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .max_concurrent_streams(limits.h2_max_streams)
        // h2 counts 32 bytes more a header than the wire does; the gateway's own exact
        // check (431 header_too_large) is the limit that applies.
        .max_header_list_size(
            u32::try_from(limits.max_header_size.saturating_mul(2)).unwrap_or(u32::MAX),
        );
    h2
}

enum Protocol {
    Http1,
    Http2,
}

/// Serves one accepted connection until it ends.
pub(super) async fn run<H: Handler>(shared: Arc<Shared<H>>, stream: TcpStream, tcp: SocketAddr) {
    let limits = shared.limits;
    let edge = &shared.edge;
    // PROXY header, TLS handshake and the first bytes share one deadline.
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let mut stream = stream;
    let addr = if edge.proxy_protocol {
        if !edge.trusted.is_empty() && !edge.trusted.contains(tcp.ip()) {
            tracing::debug!(%tcp, "PROXY header from a peer not in server.trusted_proxies");
            shared.metrics.refused(Refused::ProxyProtocol);
            return;
        }
        match tokio::time::timeout_at(deadline, super::proxy_protocol::read(&mut stream)).await {
            Ok(Ok(source)) => source.unwrap_or(tcp),
            Ok(Err(e)) => {
                tracing::debug!(%tcp, error = %e, "connection refused: bad PROXY header");
                shared.metrics.refused(Refused::ProxyProtocol);
                return;
            }
            Err(_) => {
                shared.metrics.refused(Refused::ProxyProtocol);
                return;
            }
        }
    } else {
        tcp
    };
    let _slot: Option<IpSlot> = match &shared.per_ip {
        Some(per_ip) if !edge.trusted.contains(addr.ip()) => match per_ip.take(addr.ip()) {
            Some(slot) => Some(slot),
            None => {
                if edge.tls.is_none() {
                    let _ = stream.try_write(&shared.refusal);
                }
                shared.metrics.refused(Refused::PerIp);
                tracing::debug!(%addr, "connection refused: max_connections_per_ip reached");
                return;
            }
        },
        _ => None,
    };
    let mut peer = Peer::new(addr);
    match &edge.tls {
        Some(tls) => {
            let accepted = tokio::time::timeout_at(deadline, tls.accept(stream)).await;
            let stream = match accepted {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    shared.metrics.refused(Refused::TlsHandshake);
                    return;
                }
                Err(_) => {
                    shared.metrics.refused(Refused::TlsHandshake);
                    return;
                }
            };
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            peer.tls = true;
            serve_http(&shared, stream, protocol, peer).await;
        }
        None => {
            let protocol = match sniff(&stream, deadline).await {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connection dropped before a request");
                    return;
                }
            };
            serve_http(&shared, stream, protocol, peer).await;
        }
    }
}

/// What a connection's requests report back to it.
struct ConnState {
    started: Instant,
    /// Requests whose response has not been sent whole.
    active: AtomicUsize,
    /// When `active` last fell to zero, in ms since `started`.
    idle_since_ms: AtomicU64,
    /// Requests the client dropped before they were answered.
    cancelled: AtomicU32,
    max_cancelled: u32,
    goaway: Notify,
}

impl ConnState {
    fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(since)
    }
}

/// One request's hold on its connection: counted active until its response body is sent
/// or dropped. Dropped before its response was sent whole (the client reset the stream
/// while it was handled, or while its answer was on the way), it counts as cancelled.
struct StreamGuard {
    conn: Arc<ConnState>,
    answered: AtomicBool,
    _permit: OwnedSemaphorePermit,
}

impl StreamGuard {
    fn new(conn: Arc<ConnState>, permit: OwnedSemaphorePermit) -> Self {
        conn.active.fetch_add(1, Ordering::AcqRel);
        Self {
            conn,
            answered: AtomicBool::new(false),
            _permit: permit,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let c = &self.conn;
        if !self.answered.load(Ordering::Acquire) {
            let n = c.cancelled.fetch_add(1, Ordering::AcqRel) + 1;
            if n == c.max_cancelled {
                c.goaway.notify_one();
            }
        }
        let ms = u64::try_from(c.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        c.idle_since_ms.store(ms, Ordering::Release);
        c.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`StreamGuard`] until it is sent or dropped.
pub(super) struct Tracked<B> {
    inner: B,
    _guard: Option<StreamGuard>,
}

impl<B> Tracked<B> {
    fn sent(&self) {
        if let Some(g) = &self._guard {
            g.answered.store(true, Ordering::Release);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.sent();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.sent();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn serve_http<H, I>(shared: &Arc<Shared<H>>, io: I, protocol: Protocol, peer: Peer)
where
    H: Handler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let state = Arc::new(ConnState {
        started: Instant::now(),
        active: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(0),
        cancelled: AtomicU32::new(0),
        // An HTTP/1 client cancels by closing its connection; only h2 streams are counted.
        max_cancelled: match protocol {
            Protocol::Http2 => limits.h2_max_cancelled_streams.max(1),
            Protocol::Http1 => u32::MAX,
        },
        goaway: Notify::new(),
    });
    let addr = peer.addr;
    let svc = {
        let shared = shared.clone();
        let state = state.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let state = state.clone();
            let peer = peer.clone();
            async move {
                // Made first, so that every request has its line: refused ones, and one
                // whose client went away before the answer (logged as 499 on drop).
                let access = shared
                    .edge
                    .access_log
                    .map(|listener| Access::new(listener, &req, peer.addr));
                // Past the cancelled-stream limit the GOAWAY is on its way: streams the
                // client still opens meanwhile are refused, never proxied.
                let over = state.cancelled.load(Ordering::Acquire) >= state.max_cancelled;
                let permit = if over {
                    None
                } else {
                    shared.requests.clone().try_acquire_owned().ok()
                };
                let Some(permit) = permit else {
                    let resp = GatewayError::TooManyConnections.into_response();
                    if let Some(a) = access {
                        a.answered(&resp);
                    }
                    return Ok::<_, Infallible>(resp.map(|inner| Tracked {
                        inner,
                        _guard: None,
                    }));
                };
                // hyper's read buffer bounds an HTTP/1 header only to within one read, and
                // h2 counts its header list its own way: the limit is exact here.
                let size = header_size(&req);
                if size > shared.limits.max_header_size {
                    let e = GatewayError::HeaderTooLarge {
                        limit: shared.limits.max_header_size,
                    };
                    let resp = e.into_closing_response();
                    if let Some(a) = access {
                        a.answered(&resp);
                    }
                    return Ok(resp.map(|inner| Tracked {
                        inner,
                        _guard: None,
                    }));
                }
                let guard = StreamGuard::new(state, permit);
                let resp = shared.handler.handle(req, &peer).await;
                if let Some(a) = access {
                    a.answered(&resp);
                }
                Ok(resp.map(|inner| Tracked {
                    inner,
                    _guard: Some(guard),
                }))
            }
        })
    };
    let io = TokioIo::new(io);
    let result = match protocol {
        Protocol::Http1 => {
            let conn = shared.h1.serve_connection(io, svc);
            drive(conn, |c| c.graceful_shutdown(), shared, &state, None).await
        }
        Protocol::Http2 => {
            let conn = shared.h2.serve_connection(io, svc);
            let idle = Some(limits.header_timeout);
            drive(conn, |c| c.graceful_shutdown(), shared, &state, idle).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
    }
}

/// What an access log line says of a request, taken before the handler consumes it. Its
/// line is written when the answer is ready; dropped unanswered (the client went away and
/// the handler with it), it is written with status 499, as nginx does.
struct Access {
    listener: &'static str,
    peer: SocketAddr,
    started: Instant,
    method: http::Method,
    path: String,
    written: bool,
}

/// The status logged for a request whose client went away before its answer.
const CLIENT_GONE: u16 = 499;

impl Access {
    fn new<B>(listener: &'static str, req: &http::Request<B>, peer: SocketAddr) -> Self {
        Self {
            listener,
            peer,
            started: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            written: false,
        }
    }

    fn answered<B: Body>(mut self, resp: &http::Response<B>) {
        let bytes = resp.body().size_hint().exact();
        self.write(resp.status().as_u16(), bytes);
    }

    /// One line at info, target `access` (`log.level = "info,access=off"` silences it):
    /// the path without its query (which may carry what should not be logged), the body
    /// size when known before sending (`-` when streamed), the time to the response head.
    fn write(&mut self, status: u16, bytes: Option<u64>) {
        self.written = true;
        tracing::info!(
            target: "access",
            listener = self.listener,
            peer = %self.peer,
            method = %self.method,
            path = %self.path,
            status,
            bytes = %bytes.map_or_else(|| "-".to_owned(), |b| b.to_string()),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "access"
        );
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        if !self.written {
            self.write(CLIENT_GONE, None);
        }
    }
}

/// A request head's size as sent over HTTP/1: the request line and each header line.
fn header_size<B>(req: &http::Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    // Each header line with its ": " and CRLF, and the blank line that ends the block.
    req.headers()
        .iter()
        .fold(line + 2, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Runs `conn` to its end, asking it to finish gracefully (GOAWAY on h2, close after the
/// current exchange on HTTP/1) on shutdown, after too many cancelled streams, or once it
/// has been idle for `idle`.
async fn drive<C, H>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    shared: &Shared<H>,
    state: &ConnState,
    idle: Option<Duration>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = pin!(conn);
    let idle_check = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let left = idle.saturating_sub(state.idle_for());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.max(Duration::from_millis(10))).await;
        }
    };
    let mut idle_check = pin!(idle_check);
    // A GOAWAY the gateway sent on its own (cancelled streams, idleness) completes only if
    // the client answers hyper's PING; one that does not is closed after this long.
    let grace = tokio::time::sleep(Duration::MAX);
    let mut grace = pin!(grace);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            () = shared.shutdown.cancelled(), if !draining => {
                graceful(conn.as_mut());
                draining = true;
            }
            () = state.goaway.notified(), if !draining => {
                tracing::debug!("GOAWAY: too many cancelled streams on one connection");
                shared.metrics.goaway_cancelled.inc();
                graceful(conn.as_mut());
                draining = true;
                grace.as_mut().reset(tokio::time::Instant::now() + shared.limits.header_timeout);
            }
            () = idle_check.as_mut(), if !draining => {
                shared.metrics.goaway_idle.inc();
                graceful(conn.as_mut());
                draining = true;
                grace.as_mut().reset(tokio::time::Instant::now() + shared.limits.header_timeout);
            }
            () = grace.as_mut() => return Ok(()),
        }
    }
}

/// Peeks at the first bytes to tell HTTP/1.1 from an h2c prior-knowledge preface, giving a
/// silent client until `deadline` (hyper's own header timeout starts after this).
async fn sniff(stream: &TcpStream, deadline: tokio::time::Instant) -> io::Result<Option<Protocol>> {
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
    match tokio::time::timeout_at(deadline, detect).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no request within the header timeout",
        )),
    }
}
