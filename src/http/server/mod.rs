//! Accepting connections: the connection limits (all, and per source address), the PROXY
//! protocol, TLS, protocol detection (HTTP/1.1 or h2c with prior knowledge), the header and
//! idle timeouts, and graceful shutdown. [`conn`] serves one connection.

mod conn;
mod exchange;
mod h1;
mod idle;
mod idle_clock;
pub mod proxy_protocol;
mod request_body;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderValue, Request};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::error::GatewayError;
use crate::http::response::GatewayResponse;
use crate::log_throttle::Repeats;
pub use crate::trusted_proxies::TrustedProxies;
pub use request_body::RequestBody;
pub use tls::{TlsAcceptor, TlsError};

/// Answers one request; implemented by the public gateway and the admin API.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Produces the response to `req`, which arrived from `peer`.
    fn handle(
        &self,
        req: Request<RequestBody>,
        peer: &Peer,
    ) -> impl Future<Output = GatewayResponse> + Send;
}

/// The client a request comes from.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address: the TCP peer, the source a PROXY protocol header named, or (behind a
    /// trusted proxy) the address `X-Forwarded-For` names; see [`TrustedProxies`].
    pub addr: SocketAddr,
    /// Its IP formatted as a header value, once per connection rather than per request.
    pub ip: HeaderValue,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// The trusted proxy the request came through, when `addr` was taken from its
    /// `X-Forwarded-For`; its chain is then kept and extended rather than replaced.
    pub via: Option<IpAddr>,
}

impl Peer {
    /// Describes the client at `addr` over plain TCP.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            ip: ip_value(addr.ip()),
            tls: false,
            via: None,
        }
    }

    /// The client `ip` that this peer, a trusted proxy, forwarded the request for.
    pub fn behind(&self, ip: IpAddr) -> Self {
        Self {
            addr: SocketAddr::new(ip, 0),
            ip: ip_value(ip),
            tls: self.tls,
            via: Some(self.addr.ip()),
        }
    }
}

fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Per-listener protection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; more are closed on accept. Requests in flight at once,
    /// h2 streams included, are bounded by the same figure.
    pub max_connections: usize,
    /// Connections open at once from one source address (0 = no cap); trusted proxies are
    /// exempt.
    pub max_connections_per_ip: usize,
    /// Time for a client to send a complete request header (and to start talking at all).
    pub header_timeout: Duration,
    /// How long an idle connection (between requests, no h2 stream) is kept.
    pub keepalive_timeout: Duration,
    /// After shutdown starts, in-flight requests get this long to finish.
    pub shutdown_timeout: Duration,
    /// Largest request header block, in bytes (HTTP/1 read buffer, h2 header list).
    pub max_header_size: usize,
    /// Concurrent streams one h2 connection may open.
    pub h2_max_streams: u32,
    /// Streams an h2 client may cancel on one connection before it is sent GOAWAY.
    pub h2_max_cancelled_streams: u32,
}

impl ConnectionLimits {
    /// The public listener's limits from `[server]`.
    pub fn from_config(c: &ServerConfig) -> Self {
        Self {
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            header_timeout: c.header_timeout,
            keepalive_timeout: c.keepalive_timeout,
            shutdown_timeout: c.shutdown_timeout,
            max_header_size: c.max_header_size,
            h2_max_streams: c.h2_max_streams,
            h2_max_cancelled_streams: c.h2_max_cancelled_streams,
        }
    }
}

/// What stands between the socket and HTTP on a listener.
#[derive(Clone, Default)]
pub struct Edge {
    /// Terminates TLS when set.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// Each connection starts with a PROXY protocol (v1 or v2) header naming the client.
    pub proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` and PROXY headers are believed.
    pub trusted: TrustedProxies,
    /// `Some(listener name)`: one access log line per request (`log.access`).
    pub access_log: Option<&'static str>,
}

/// Why a connection was closed before any request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    MaxConnections,
    PerIp,
    ProxyProtocol,
    TlsHandshake,
}

/// A listener's connection metrics.
#[derive(Clone)]
pub struct ListenerMetrics {
    open: Option<prometheus::IntGauge>,
    idle: Option<prometheus::IntGauge>,
    refused: [prometheus::IntCounter; 4],
    goaway_cancelled: prometheus::IntCounter,
    goaway_idle: prometheus::IntCounter,
    /// Accept failures: out of descriptors (EMFILE, ENFILE), out of memory, other.
    accept_errors: [prometheus::IntCounter; 3],
}

/// How long accepting pauses once the process or the system is out of descriptors (or
/// of memory for a socket): long enough not to spin, short enough that a crowd's next
/// connections are taken soon after some close.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why an accept failed, for the metric and the back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptError {
    /// EMFILE or ENFILE: the open-files limit.
    OpenFiles,
    /// ENOBUFS or ENOMEM.
    Memory,
    /// Anything else: one connection's trouble (it was reset before it was taken).
    Other,
}

impl AcceptError {
    fn of(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => Self::OpenFiles,
            Some(libc::ENOBUFS | libc::ENOMEM) => Self::Memory,
            _ => Self::Other,
        }
    }
}

impl ListenerMetrics {
    /// Counts `listener`'s refusals and GOAWAYs in `m`; `open`, if given, counts its open
    /// connections.
    pub fn new(
        m: &crate::metrics::Metrics,
        listener: &str,
        open: Option<prometheus::IntGauge>,
    ) -> Self {
        let refused = [
            "max_connections",
            "per_ip",
            "proxy_protocol",
            "tls_handshake",
        ]
        .map(|reason| m.connections_refused.with_label_values(&[listener, reason]));
        let accept_errors = ["open_files", "memory", "other"]
            .map(|reason| m.accept_errors.with_label_values(&[listener, reason]));
        Self {
            idle: open.as_ref().map(|_| m.connections_idle.clone()),
            open,
            refused,
            accept_errors,
            goaway_cancelled: m.goaway.with_label_values(&["cancelled_streams"]),
            goaway_idle: m.goaway.with_label_values(&["idle"]),
        }
    }

    /// Metrics that go nowhere (the demo backend's listener).
    pub fn unregistered() -> Self {
        Self::new(&crate::metrics::Metrics::new(), "none", None)
    }

    pub(crate) fn refused(&self, why: Refused) {
        self.refused[why as usize].inc();
    }

    /// Counts a connection set aside idle until the guard is dropped.
    fn idle(&self) -> IdleGuard<'_> {
        if let Some(g) = &self.idle {
            g.inc();
        }
        IdleGuard(self.idle.as_ref())
    }

    /// Counts a failed accept and logs it (one line a second at most, with a count); how
    /// long to pause accepting, when the failure is one every connection would meet.
    fn accept_failed(&self, e: &io::Error) -> Option<Duration> {
        static REPEATS: Repeats = Repeats::every(Duration::from_secs(1));
        let why = AcceptError::of(e);
        self.accept_errors[why as usize].inc();
        let pause = (why != AcceptError::Other).then_some(ACCEPT_BACKOFF);
        if let Some(r) = REPEATS.admit_site("accept failed") {
            tracing::warn!(
                error = %e,
                repeated = r.count,
                paused_ms = pause.map_or(0, |p| p.as_millis() as u64),
                "accept failed"
            );
        }
        pause
    }
}

/// A connection's place in `flashgate_connections_idle` while it is set aside.
struct IdleGuard<'a>(Option<&'a prometheus::IntGauge>);

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.dec();
        }
    }
}

/// The raw HTTP/1.1 answer written, best effort, to a connection over a limit before it
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

/// Connections open per source address, for `max_connections_per_ip`.
struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`]; gives it back when dropped.
struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What every connection of a listener shares.
struct Shared<H> {
    handler: H,
    limits: ConnectionLimits,
    edge: Edge,
    per_ip: Option<Arc<PerIp>>,
    /// Requests in flight on this listener, h2 streams included.
    requests: Arc<Semaphore>,
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
    refusal: Vec<u8>,
    shutdown: CancellationToken,
    /// When set-aside connections have idled long enough.
    idle_clock: Arc<idle_clock::IdleClock>,
    metrics: ListenerMetrics,
}

/// Serves `listener` with `handler` until `shutdown` fires, then stops accepting and lets
/// in-flight requests finish for up to `limits.shutdown_timeout`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    limits: ConnectionLimits,
    edge: Edge,
    metrics: ListenerMetrics,
    shutdown: CancellationToken,
) {
    let open = metrics.open.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shared = Arc::new(Shared {
        handler,
        per_ip: (limits.max_connections_per_ip > 0).then(|| {
            Arc::new(PerIp {
                max: limits.max_connections_per_ip,
                open: Mutex::new(HashMap::new()),
            })
        }),
        requests: Arc::new(Semaphore::new(limits.max_connections)),
        h1: conn::h1_builder(&limits),
        h2: conn::h2_builder(&limits),
        refusal: too_many_connections(),
        limits,
        edge,
        shutdown: shutdown.clone(),
        idle_clock: idle_clock::start(limits.keepalive_timeout, &shutdown),
        metrics,
    });
    let tracker = TaskTracker::new();
    let mut stopping = pin!(shutdown.cancelled());
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopping.as_mut() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                if let Some(pause) = shared.metrics.accept_failed(&e) {
                    // Out of descriptors: every retry would fail alike until a connection
                    // closes, so wait instead of spinning (nginx waits 500 ms).
                    tokio::select! {
                        () = stopping.as_mut() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Refuse at once: a crowd must not pile up in accepted-but-unserved sockets.
            let _ = stream.try_write(&shared.refusal);
            shared.metrics.refused(Refused::MaxConnections);
            tracing::debug!(%peer, "connection refused: max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let open = open.clone();
        if let Some(g) = &open {
            g.inc();
        }
        tracker.spawn(async move {
            conn::run(shared, stream, peer).await;
            drop(permit);
            if let Some(g) = open {
                g.dec();
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = %humantime::format_duration(limits.shutdown_timeout),
            "shutdown deadline passed with requests still in flight; closing them"
        );
    }
}
