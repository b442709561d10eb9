//! A proxied request body must arrive whole within `server.body_timeout`: the upstream's
//! response-head timeout does not bound an upload the upstream answered early, and a client
//! that stops sending would otherwise hold an upstream connection for as long as it likes.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// Why a proxied body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
pub struct BodyTimedOut(pub Duration);

/// The client's own body failed (malformed framing, cut off): the client's fault, told
/// apart from the upstream's failures by the proxy.
#[derive(Debug, thiserror::Error)]
#[error("the request body is malformed or was cut off: {0}")]
pub struct ClientBodyBroken(#[source] pub Box<dyn StdError + Send + Sync>);

/// A body that fails once `limit` has passed since it was first waited for; its own
/// errors come out as [`ClientBodyBroken`].
pub struct Deadline<B> {
    inner: B,
    limit: Duration,
    /// Made on the first wait: a body that is already whole (most requests) costs nothing.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Deadline<B> {
    /// Bounds `inner` by `limit`.
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(
                frame.map(|f| f.map_err(|e| Box::new(ClientBodyBroken(e.into())) as Self::Error)),
            );
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
