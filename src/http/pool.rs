//! Keep-alive connections to the upstream, at most `max_connections` of them open at once.
//!
//! A connection goes back to the pool only when both directions are done: the response
//! body read to the end *and* the request body sent (a backend may answer 401 before it
//! has read an upload). The first is seen on the body; the second is hyper's readiness for
//! the next request, waited for in a small task in the rare case it lags, so that nobody
//! else ever takes a connection that is not ready and waits on it. A body dropped half-read
//! takes its connection with it, since the connection's state is then unknown.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No TCP connection could be opened in time.
    #[error("connect to {authority}: {source}")]
    Connect {
        /// The upstream's `host:port`.
        authority: Authority,
        /// The I/O error, or `TimedOut`.
        source: io::Error,
    },
    /// The HTTP exchange failed (reset, malformed answer, request body error, …).
    #[error("exchange with the upstream: {0}")]
    Http(#[from] hyper::Error),
    /// `max_connections` connections are open and none is idle; nothing was sent.
    #[error("every connection to the upstream is busy")]
    Busy,
}

/// Idle keep-alive connections to one upstream, sending request bodies of type `B`.
pub struct Pool<B> {
    inner: Arc<PoolInner<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// What a request body must be to go upstream.
pub trait SendBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<T> SendBody for T where
    T: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

struct PoolInner<B> {
    authority: Authority,
    /// One permit per open connection, held by its connection task.
    open: Arc<Semaphore>,
    /// Most recently used last; the oldest are at the front.
    idle: Mutex<Vec<Idle<B>>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    builder: http1::Builder,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B: SendBody> Pool<B> {
    /// A pool for `authority` keeping at most `max_idle` idle connections and at most
    /// `max_open` open ones.
    pub fn new(
        authority: Authority,
        max_idle: usize,
        max_open: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let mut builder = http1::Builder::new();
        builder.writev(true);
        Self {
            inner: Arc::new(PoolInner {
                authority,
                open: Arc::new(Semaphore::new(max_open.max(1))),
                idle: Mutex::new(Vec::new()),
                max_idle,
                idle_timeout,
                connect_timeout,
                builder,
            }),
        }
    }

    /// Idle connections held right now.
    pub fn idle_count(&self) -> usize {
        self.inner.lock().len()
    }

    /// Sends `req` on an idle connection, or on a new one if none is usable.
    pub async fn send(
        &self,
        mut req: Request<B>,
    ) -> Result<Response<PooledBody<B>>, UpstreamError> {
        while let Some(mut sender) = self.inner.checkout() {
            // Only ready connections are pooled; one closed since is skipped.
            if !sender.is_ready() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, sender)),
                Err(mut e) => match e.take_message() {
                    // Not written: the connection died idle. Try the next one.
                    Some(unsent) => req = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.inner.connect().await?;
        let resp = sender.send_request(req).await?;
        Ok(self.wrap(resp, sender))
    }

    fn wrap(&self, resp: Response<Incoming>, sender: SendRequest<B>) -> Response<PooledBody<B>> {
        resp.map(|body| PooledBody {
            body,
            sender: Some(sender),
            pool: self.inner.clone(),
        })
    }
}

impl<B: SendBody> PoolInner<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle<B>>> {
        // The list stays consistent even if a holder panicked: every push and pop is whole.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn checkout(&self) -> Option<SendRequest<B>> {
        let mut idle = self.lock();
        let entry = idle.pop()?;
        if entry.since.elapsed() > self.idle_timeout {
            // The newest is too old, so all are: let them close.
            idle.clear();
            return None;
        }
        Some(entry.sender)
    }

    /// Returns a connection whose response has been read: at once when it is ready for
    /// the next request, else once its request body has been sent too (bounded by the
    /// idle timeout); a connection that closes meanwhile is dropped.
    fn release(self: &Arc<Self>, mut sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.push_idle(sender);
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let ready = tokio::time::timeout(pool.idle_timeout, sender.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                pool.push_idle(sender);
            }
        });
    }

    fn push_idle(&self, sender: SendRequest<B>) {
        let mut idle = self.lock();
        if idle.len() >= self.max_idle {
            return;
        }
        if idle
            .first()
            .is_some_and(|oldest| oldest.since.elapsed() > self.idle_timeout)
        {
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<SendRequest<B>, UpstreamError> {
        let permit = self
            .open
            .clone()
            .try_acquire_owned()
            .map_err(|_| UpstreamError::Busy)?;
        let fail = |source| UpstreamError::Connect {
            authority: self.authority.clone(),
            source,
        };
        let stream = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| fail(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
        .map_err(fail)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = self.builder.handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
            // The connection is closed only now: its place is free.
            drop(permit);
        });
        Ok(sender)
    }
}

/// A response body from the upstream that hands its connection back to the pool once it
/// has been read to the end.
pub struct PooledBody<B: SendBody> {
    body: Incoming,
    sender: Option<SendRequest<B>>,
    pool: Arc<PoolInner<B>>,
}

impl<B: SendBody> PooledBody<B> {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.release(sender);
        }
    }
}

impl<B: SendBody> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &polled {
            None => self.release(),
            Some(Err(_)) => drop(self.sender.take()),
            Some(Ok(_)) => {}
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: SendBody> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // Servers stop polling a body whose end they know from its length, so "read to the
        // end" is also "dropped with nothing left".
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
