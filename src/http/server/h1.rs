//! HTTP/1.1 over plain TCP, set aside between requests: while its client thinks, a
//! keep-alive connection is only its socket and a small task, as in nginx. hyper serves
//! each run of requests (a session) in a box of its own; once it waits for a next request
//! with nothing of its own held (see `idle`), it is taken apart, its buffers given back,
//! and the socket watched until the client writes again, the idle time passes, or the
//! gateway stops. A set-aside connection is counted in `flashgate_connections_idle`.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::exchange::{answer, ConnState};
use super::idle::Watched;
use super::{Handler, Shared};

/// How a session ended.
enum Session {
    /// The connection is over (closed by either side, an error, or the gateway's stop).
    Ended,
    /// hyper waited for a next request: the socket, and the bytes read ahead of it.
    SetAside(TcpStream, Bytes),
}

/// Serves an HTTP/1.1 connection until it ends, set aside between requests.
pub(super) async fn serve<H: Handler>(
    shared: &Arc<Shared<H>>,
    stream: TcpStream,
    state: Arc<ConnState>,
) {
    let (mut stream, mut ahead) = (stream, Bytes::new());
    loop {
        // The next head is timed by hyper from the session's start (`header_timeout`), as
        // nginx times one from when the client spoke again: timed from the set-aside, a
        // client that idled past it was closed on with its request unread.
        let ran = Box::pin(session(shared, stream, ahead, &state)).await;
        match ran {
            Session::Ended => return,
            Session::SetAside(s, a) => (stream, ahead) = (s, a),
        }
        // Part of a next request is here already: serve it at once.
        if !ahead.is_empty() {
            continue;
        }
        let _set_aside = shared.metrics.idle();
        if !woken(shared, &stream).await {
            return;
        }
    }
}

/// Waits for the client of a set-aside connection to write again or close (true), or for
/// the idle time to pass or the gateway to stop (false). Polled by hand rather than
/// `select!`ed: this state is what each idle connection's task holds, so it is kept small.
async fn woken<H: Handler>(shared: &Shared<H>, stream: &TcpStream) -> bool {
    // Cancelled once it idled `keepalive_timeout`, or at the stop.
    let over = shared.idle_clock.token();
    let mut over = pin!(over.cancelled());
    poll_fn(|cx| {
        // Data, or the client's close: the next session reads which.
        if let Poll::Ready(r) = stream.poll_read_ready(cx) {
            return Poll::Ready(r.is_ok());
        }
        over.as_mut().poll(cx).map(|()| false)
    })
    .await
}

/// hyper on the connection until it ends or waits idle for a next request.
async fn session<H: Handler>(
    shared: &Arc<Shared<H>>,
    stream: TcpStream,
    ahead: Bytes,
    state: &Arc<ConnState>,
) -> Session {
    let idle = &state.idle;
    idle.session_starts();
    let addr = state.peer.addr;
    let svc = {
        let (shared, state) = (shared.clone(), state.clone());
        service_fn(move |req| answer(shared.clone(), state.clone(), true, req))
    };
    let io = TokioIo::new(Watched::new(stream, ahead, state.clone()));
    let mut conn = shared.h1.serve_connection(io, svc);
    let mut stopping = pin!(shared.shutdown.cancelled());
    let mut draining = false;
    let ended = poll_fn(|cx| {
        let stop = !draining && stopping.as_mut().poll(cx).is_ready();
        if stop && !idle.dispatched() {
            // Nothing asked yet in this session: the stop closes it now (as hyper closes a
            // connection waiting for a request).
            return Poll::Ready(Some(Ok(())));
        }
        if stop {
            // Close after the current exchange; never set aside from here on.
            Pin::new(&mut conn).graceful_shutdown();
            draining = true;
        }
        match Pin::new(&mut conn).poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending
                if !draining && state.active.load(Ordering::Acquire) == 0 && idle.idle() =>
            {
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match ended {
        Some(Ok(())) => Session::Ended,
        Some(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            Session::Ended
        }
        None => {
            let parts = conn.into_parts();
            let (stream, unread) = parts.io.into_inner().into_parts();
            // What hyper had read and not used comes before what it had not read yet;
            // copied out, as a slice of hyper's read buffer (even an empty one) would
            // keep the whole buffer.
            let ahead = if parts.read_buf.is_empty() && unread.is_empty() {
                Bytes::new()
            } else {
                let mut both = BytesMut::with_capacity(parts.read_buf.len() + unread.len());
                both.extend_from_slice(&parts.read_buf);
                both.extend_from_slice(&unread);
                both.freeze()
            };
            Session::SetAside(stream, ahead)
        }
    }
}
