//! One request on a connection: what the connection counts of its requests (in flight,
//! cancelled), the listener's request bound and the exact header limit before the
//! handler, the response body that holds the request's place until it is sent, and the
//! access log line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::idle::{IdleWatch, Watching};
use super::{ConnectionLimits, Handler, Peer, RequestBody, Shared};
use crate::error::GatewayError;
use crate::http::response::{GatewayResponse, ResponseBody};

/// The HTTP version a connection speaks.
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// What a connection's requests report back to it.
pub(super) struct ConnState {
    started: Instant,
    /// Requests whose response has not been sent whole.
    pub(super) active: AtomicUsize,
    /// When `active` last fell to zero, in ms since `started`.
    idle_since_ms: AtomicU64,
    /// Requests the client dropped before they were answered.
    cancelled: AtomicU32,
    max_cancelled: u32,
    pub(super) goaway: Notify,
    /// The client.
    pub(super) peer: Peer,
    /// What hyper does on an HTTP/1 connection that may be set aside.
    pub(super) idle: IdleWatch,
}

impl Watching for ConnState {
    fn watch(&self) -> &IdleWatch {
        &self.idle
    }
}

impl ConnState {
    pub(super) fn idle_for(&self) -> Duration {
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

/// A connection's [`ConnState`] for `protocol`.
pub(super) fn conn_state(
    protocol: &Protocol,
    limits: &ConnectionLimits,
    peer: Peer,
) -> Arc<ConnState> {
    Arc::new(ConnState {
        peer,
        idle: IdleWatch::new(),
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
    })
}

/// A response as the connection sends it: holding its request's place until sent.
pub(super) type Answer = http::Response<Tracked<ResponseBody>>;

/// Answers one request of a connection: the listener's request bound, the exact header
/// limit, then the handler; with `set_aside`, the request's body is watched (an HTTP/1
/// connection that may be set aside between requests).
pub(super) async fn answer<H: Handler>(
    shared: Arc<Shared<H>>,
    state: Arc<ConnState>,
    set_aside: bool,
    req: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let req = req.map(|body| {
        if set_aside {
            state.idle.request_arrived();
            RequestBody::watched(body, state.clone())
        } else {
            RequestBody::unwatched(body)
        }
    });
    let peer = &state.peer;
    // Made first, so that every request has its line: refused ones, and one whose client
    // went away before the answer (logged as 499 on drop).
    let access = shared
        .edge
        .access_log
        .map(|listener| Access::new(listener, &req, peer.addr));
    // Past the cancelled-stream limit the GOAWAY is on its way: streams the client still
    // opens meanwhile are refused, never proxied.
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
        return Ok(resp.map(|inner| Tracked {
            inner,
            _guard: None,
        }));
    };
    // hyper's read buffer bounds an HTTP/1 header only to within one read, and h2 counts
    // its header list its own way: the limit is exact here.
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
    let guard = StreamGuard::new(state.clone(), permit);
    let h2_head = req.method() == http::Method::HEAD && req.version() == http::Version::HTTP_2;
    let mut resp = shared.handler.handle(req, &state.peer).await;
    if h2_head {
        resp = without_body(resp);
    }
    if let Some(a) = access {
        a.answered(&resp);
    }
    Ok(resp.map(|inner| Tracked {
        inner,
        _guard: Some(guard),
    }))
}

/// A HEAD's answer over HTTP/2, which sends whatever body it is given (HTTP/1 drops it),
/// and a client resets a stream whose HEAD answer has one: the body is left out, its
/// length kept as the GET's.
fn without_body(resp: GatewayResponse) -> GatewayResponse {
    let (mut parts, body) = resp.into_parts();
    match body.size_hint().exact() {
        Some(0) => return http::Response::from_parts(parts, body),
        Some(n) => {
            parts
                .headers
                .entry(http::header::CONTENT_LENGTH)
                .or_insert_with(|| http::HeaderValue::from(n));
        }
        None => {}
    }
    http::Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
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
