//! Telling when an HTTP/1 connection is idle between requests, so that it can be set aside
//! without hyper's buffers (16 KB and more a connection) while its client thinks.
//!
//! hyper does not say when it waits for a next request, so the connection's IO and its
//! request bodies report what hyper does with them ([`Watched`], [`IdleWatch::body`]).
//! hyper may be taken apart (`into_parts`) only when all of these hold, which together
//! mean it is between requests with nothing of its own left unwritten:
//! - every response was sent whole (`ConnState::active` is 0, counted by the caller);
//! - its last read found nothing, and it read nothing since its last write was flushed,
//!   so that a request arriving in pieces is timed by hyper's header timeout, never
//!   restarted by a set-aside (the one read that drains a body dropped half read does not
//!   count: what it brings is the body's);
//! - everything it wrote was flushed;
//! - every request body was read to its end, or hyper drained the rest of one dropped
//!   half read. hyper tries once, from what it holds, and gives up and closes otherwise
//!   (what is left may be anything, a request included). Drained, it reads for a next
//!   request after its answer's flush; given up, it never reads again and ends once its
//!   answer is out. So a read after both the drop and the last flush means drained.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection's IO and request bodies report, read after each time hyper waits.
#[derive(Debug)]
pub(super) struct IdleWatch {
    /// hyper's last read found no data.
    read_blocked: AtomicBool,
    /// hyper read bytes since its last write was flushed (or since the session began).
    read_since_flush: AtomicBool,
    /// hyper wrote bytes it has not flushed.
    unflushed: AtomicBool,
    /// Request bodies not yet read to their end.
    open_bodies: AtomicUsize,
    /// A request body was dropped before its end: hyper drains it or closes.
    unfinished_body: AtomicBool,
    /// hyper read (or tried to) since the last such drop and the last flush after it.
    read_after_drop: AtomicBool,
    /// A request arrived in this session.
    dispatched: AtomicBool,
}

impl IdleWatch {
    /// A watch for a connection whose first request is still to come.
    pub(super) fn new() -> Self {
        Self {
            read_blocked: AtomicBool::new(false),
            read_since_flush: AtomicBool::new(true),
            unflushed: AtomicBool::new(false),
            open_bodies: AtomicUsize::new(0),
            unfinished_body: AtomicBool::new(false),
            read_after_drop: AtomicBool::new(false),
            dispatched: AtomicBool::new(false),
        }
    }

    /// A new hyper session starts on the connection: what it reads is a request's.
    pub(super) fn session_starts(&self) {
        self.read_since_flush.store(true, Ordering::Relaxed);
        self.read_blocked.store(false, Ordering::Relaxed);
        self.dispatched.store(false, Ordering::Relaxed);
    }

    /// A request arrived: hyper finished the one before, its body included.
    pub(super) fn request_arrived(&self) {
        self.unfinished_body.store(false, Ordering::Relaxed);
        self.dispatched.store(true, Ordering::Relaxed);
    }

    /// Whether a request arrived in this session: until then, what hyper holds is at most
    /// part of a head, which a stop or the idle time may cut off.
    pub(super) fn dispatched(&self) -> bool {
        self.dispatched.load(Ordering::Relaxed)
    }

    /// Whether hyper, with no response in flight, waits for a next request with nothing
    /// of its own held (see the module's list).
    pub(super) fn idle(&self) -> bool {
        self.read_blocked.load(Ordering::Relaxed)
            && !self.read_since_flush.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
            && self.open_bodies.load(Ordering::Relaxed) == 0
            && (!self.unfinished_body.load(Ordering::Relaxed)
                || self.read_after_drop.load(Ordering::Relaxed))
    }

    /// Whether hyper's next read is its try at draining a body dropped half read.
    fn draining(&self) -> bool {
        self.unfinished_body.load(Ordering::Relaxed)
            && !self.read_after_drop.load(Ordering::Relaxed)
    }

    /// hyper read from the connection, or tried to.
    fn read_tried(&self) {
        self.read_after_drop.store(true, Ordering::Relaxed);
    }
}

/// What holds a connection's [`IdleWatch`]: the connection's state, one allocation with
/// everything else it shares with its requests.
pub(super) trait Watching: Send + Sync {
    /// The connection's watch.
    fn watch(&self) -> &IdleWatch;
}

/// Counts a request body of the connection `conn` until it is read to its end or dropped.
pub(super) fn body(conn: Arc<dyn Watching>) -> BodyWatch {
    conn.watch().open_bodies.fetch_add(1, Ordering::Relaxed);
    BodyWatch { conn: Some(conn) }
}

/// One request body's place in [`IdleWatch::open_bodies`].
pub(crate) struct BodyWatch {
    conn: Option<Arc<dyn Watching>>,
}

impl std::fmt::Debug for BodyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyWatch")
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl BodyWatch {
    /// The body was read to its end.
    pub(super) fn ended(&mut self) {
        if let Some(c) = self.conn.take() {
            c.watch().open_bodies.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for BodyWatch {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let w = c.watch();
            w.read_after_drop.store(false, Ordering::Relaxed);
            w.unfinished_body.store(true, Ordering::Relaxed);
            w.open_bodies.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection's socket as hyper sees it: bytes read ahead of it first (`ahead`, what an
/// earlier session had read and not used), every read, write and flush reported.
pub(super) struct Watched<I> {
    io: I,
    ahead: Bytes,
    conn: Arc<dyn Watching>,
}

impl<I> Watched<I> {
    pub(super) fn new(io: I, ahead: Bytes, conn: Arc<dyn Watching>) -> Self {
        Self { io, ahead, conn }
    }

    /// The socket and the bytes read ahead that were not read through it.
    pub(super) fn into_parts(self) -> (I, Bytes) {
        (self.io, self.ahead)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let w = this.conn.watch();
        // hyper's one try at draining a body dropped half read is its first read after the
        // drop (and after the answer's flush): what that read brings is the body's end,
        // not a next request's, and leaves hyper between requests if it drained.
        let draining = w.draining();
        w.read_tried();
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            if !draining {
                w.read_since_flush.store(true, Ordering::Relaxed);
            }
            w.read_blocked.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        match &polled {
            Poll::Pending => w.read_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {
                w.read_blocked.store(false, Ordering::Relaxed);
                if buf.filled().len() > before && !draining {
                    w.read_since_flush.store(true, Ordering::Relaxed);
                }
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.conn.watch().unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.conn.watch().unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        // hyper flushes on every turn, written or not: only a flush of something written
        // (a response) ends what was read before it.
        if let Poll::Ready(Ok(())) = polled {
            if self.conn.watch().unflushed.swap(false, Ordering::Relaxed) {
                let w = self.conn.watch();
                w.read_since_flush.store(false, Ordering::Relaxed);
                // A read before this flush may have been hyper's try at draining.
                w.read_after_drop.store(false, Ordering::Relaxed);
            }
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.conn.watch().unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Conn(IdleWatch);

    impl Watching for Conn {
        fn watch(&self) -> &IdleWatch {
            &self.0
        }
    }

    /// A watched end of a pipe, the client's end, and the connection.
    fn pipe() -> (
        Watched<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Conn>,
    ) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let conn = Arc::new(Conn(IdleWatch::new()));
        (Watched::new(ours, Bytes::new(), conn.clone()), theirs, conn)
    }

    /// Polls one read that finds nothing (as hyper does when it waits).
    fn read_blocks(io: &mut Watched<tokio::io::DuplexStream>) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut space = [0u8; 64];
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(io).poll_read(&mut cx, &mut buf).is_pending());
    }

    #[tokio::test]
    async fn idle_once_a_request_was_answered_and_flushed_and_reading_waits() {
        let (mut io, mut client, conn) = pipe();
        let watch = conn.watch();
        assert!(
            !watch.idle(),
            "a new connection's first request is still to come"
        );
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 64];
        let n = io.read(&mut head).await.expect("read");
        assert!(n > 0);
        read_blocks(&mut io);
        assert!(!watch.idle(), "read since the last answer");
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        assert!(!watch.idle(), "written, not flushed");
        io.flush().await.expect("flush");
        read_blocks(&mut io);
        assert!(watch.idle());
    }

    #[tokio::test]
    async fn a_request_arriving_in_pieces_is_never_idle_even_across_empty_flushes() {
        let (mut io, mut client, conn) = pipe();
        let watch = conn.watch();
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        io.flush().await.expect("flush");
        // Part of the next head, then hyper's turn: a flush with nothing written.
        client.write_all(b"GET / HT").await.expect("write");
        let mut part = [0u8; 64];
        assert!(io.read(&mut part).await.expect("read") > 0);
        io.flush().await.expect("flush");
        read_blocks(&mut io);
        assert!(
            !watch.idle(),
            "hyper's header timeout governs a head in pieces"
        );
    }

    #[tokio::test]
    async fn open_bodies_and_bodies_dropped_half_read_keep_it_busy() {
        let (mut io, _client, conn) = pipe();
        let watch = conn.watch();
        io.write_all(b"x").await.expect("write");
        io.flush().await.expect("flush");
        read_blocks(&mut io);
        assert!(watch.idle());
        let mut read_whole = body(conn.clone());
        assert!(!watch.idle(), "a body still to read");
        read_whole.ended();
        drop(read_whole);
        assert!(watch.idle());
        drop(body(conn.clone()));
        assert!(
            !watch.idle(),
            "hyper drains or closes a body dropped half read"
        );
        watch.request_arrived();
        assert!(
            watch.idle(),
            "the next request means hyper finished the body"
        );
    }
}
