//! A request's body as the handlers read it: hyper's, telling its HTTP/1 connection when
//! it was read to its end (the connection may be set aside idle only then; see `idle`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::idle::{self, BodyWatch, Watching};

/// A request's body: hyper's [`Incoming`], counted by its connection until read whole.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    watch: Option<BodyWatch>,
}

impl RequestBody {
    /// `inner`, counted by its connection `conn` while it has more to read.
    pub(super) fn watched(inner: Incoming, conn: Arc<dyn Watching>) -> Self {
        let watch = (!inner.is_end_stream()).then(|| idle::body(conn));
        Self { inner, watch }
    }

    /// `inner` on a connection that is never set aside (h2).
    pub(super) fn unwatched(inner: Incoming) -> Self {
        Self { inner, watch: None }
    }

    fn ended(&mut self) {
        if let Some(w) = &mut self.watch {
            w.ended();
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // Every byte of a sized body delivered counts as read whole, the closing poll or not.
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}
