//! One connection from accept to close: the PROXY header, the per-address cap, TLS or
//! h2c detection, then HTTP with the limits no single client may exceed: streams counted
//! against the listener's request bound, an idle h2 connection closed, and GOAWAY for a
//! client that keeps cancelling streams (paced rapid reset).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::exchange::{answer, conn_state, ConnState, Protocol};
use super::{ConnectionLimits, Handler, IpSlot, Peer, Refused, Shared};

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

/// Serves one accepted connection until it ends.
pub(super) async fn run<H: Handler>(shared: Arc<Shared<H>>, stream: TcpStream, tcp: SocketAddr) {
    // What comes before a plain HTTP/1 connection's requests (and the whole of any other)
    // is boxed apart, so that the task of an idle HTTP/1 connection stays small.
    let Some(Plain {
        stream,
        state,
        slot,
    }) = Box::pin(open(&shared, stream, tcp)).await
    else {
        return;
    };
    super::h1::serve(&shared, stream, state).await;
    drop(slot);
}

/// A plain HTTP/1 connection ready for its requests.
struct Plain {
    stream: TcpStream,
    state: Arc<ConnState>,
    slot: Option<IpSlot>,
}

/// The PROXY header, the per-address cap, then TLS or protocol detection: a plain HTTP/1
/// connection is returned for [`run`] to serve; any other is served here whole.
async fn open<H: Handler>(
    shared: &Arc<Shared<H>>,
    stream: TcpStream,
    tcp: SocketAddr,
) -> Option<Plain> {
    let limits = shared.limits;
    let edge = &shared.edge;
    // PROXY header, TLS handshake and the first bytes share one deadline.
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let mut stream = stream;
    let addr = if edge.proxy_protocol {
        if !edge.trusted.is_empty() && !edge.trusted.contains(tcp.ip()) {
            tracing::debug!(%tcp, "PROXY header from a peer not in server.trusted_proxies");
            shared.metrics.refused(Refused::ProxyProtocol);
            return None;
        }
        match tokio::time::timeout_at(deadline, super::proxy_protocol::read(&mut stream)).await {
            Ok(Ok(source)) => source.unwrap_or(tcp),
            Ok(Err(e)) => {
                tracing::debug!(%tcp, error = %e, "connection refused: bad PROXY header");
                shared.metrics.refused(Refused::ProxyProtocol);
                return None;
            }
            Err(_) => {
                shared.metrics.refused(Refused::ProxyProtocol);
                return None;
            }
        }
    } else {
        tcp
    };
    let slot: Option<IpSlot> = match &shared.per_ip {
        Some(per_ip) if !edge.trusted.contains(addr.ip()) => match per_ip.take(addr.ip()) {
            Some(slot) => Some(slot),
            None => {
                if edge.tls.is_none() {
                    let _ = stream.try_write(&shared.refusal);
                }
                shared.metrics.refused(Refused::PerIp);
                tracing::debug!(%addr, "connection refused: max_connections_per_ip reached");
                return None;
            }
        },
        _ => None,
    };
    let peer = Peer::new(addr);
    match &edge.tls {
        Some(tls) => serve_tls(shared, tls, stream, peer, deadline).await,
        None => match sniff(&stream, deadline).await {
            Ok(Some(Protocol::Http1)) => {
                let state = conn_state(&Protocol::Http1, &limits, peer);
                return Some(Plain {
                    stream,
                    state,
                    slot,
                });
            }
            Ok(Some(Protocol::Http2)) => serve_http(shared, stream, Protocol::Http2, peer).await,
            Ok(None) => {}
            Err(e) => tracing::debug!(%addr, error = %e, "connection dropped before a request"),
        },
    }
    None
}

/// The TLS handshake (within `deadline`), then HTTP/1.1 or h2 as ALPN chose.
async fn serve_tls<H: Handler>(
    shared: &Arc<Shared<H>>,
    tls: &super::TlsAcceptor,
    stream: TcpStream,
    mut peer: Peer,
    deadline: tokio::time::Instant,
) {
    let stream = match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(addr = %peer.addr, error = %e, "TLS handshake failed");
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
    serve_http(shared, stream, protocol, peer).await;
}

/// Serves a connection that is never set aside (h2, and HTTP/1 over TLS) until it ends.
async fn serve_http<H, I>(shared: &Arc<Shared<H>>, io: I, protocol: Protocol, peer: Peer)
where
    H: Handler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let addr = peer.addr;
    let state = conn_state(&protocol, &limits, peer);
    let svc = {
        let (shared, state) = (shared.clone(), state.clone());
        service_fn(move |req| answer(shared.clone(), state.clone(), false, req))
    };
    let io = TokioIo::new(io);
    let result = match protocol {
        Protocol::Http1 => {
            let conn = shared.h1.serve_connection(io, svc);
            drive(conn, |c| c.graceful_shutdown(), shared, &state, None).await
        }
        Protocol::Http2 => {
            let conn = shared.h2.serve_connection(io, svc);
            let idle = Some(limits.keepalive_timeout);
            drive(conn, |c| c.graceful_shutdown(), shared, &state, idle).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
    }
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
