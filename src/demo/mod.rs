//! `flashgate demo`: a whole flash sale on one machine — a demo seckill backend, the
//! gateway with the memory store in front of it, and one sale.

pub(crate) mod identity;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::http::RequestBody;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::response::{json, GatewayResponse};
use crate::http::server::{self, ConnectionLimits, Handler, Peer};
use crate::signature::{Signer, FLASHGATE_SIGNATURE};

/// One order as the backend applied it.
#[derive(Debug, Clone, serde::Serialize)]
struct Applied {
    order_id: String,
    sku: String,
    user_id: String,
    quantity: u64,
    /// When the delivery that applied it reached the backend (Unix ms): load tests measure
    /// the pace the backend was fed at, to which redeliveries add nothing.
    arrived_ms: u64,
    /// Cancelled since (unpaid), its units handed back through the gateway.
    cancelled: bool,
}

/// What the demo backend has recorded.
#[derive(Default)]
struct Ledger {
    keys: HashSet<String>,
    by_sku: HashMap<String, u64>,
    orders: Vec<Applied>,
    duplicates: u64,
}

/// A seckill backend that records orders, deduplicated by Idempotency-Key.
#[derive(Clone, Default)]
pub struct DemoBackend {
    ledger: Arc<Mutex<Ledger>>,
    /// How long each order takes to apply: a slow backend for load tests.
    delay: Duration,
    /// Faults a load test switches on and off while it runs.
    faults: Arc<Faults>,
    /// When set, orders must carry a valid `Flashgate-Signature` within the tolerance.
    verify: Option<(Signer, Duration)>,
    /// When set, a backend of known capacity: it sheds what it cannot hold.
    capacity: Option<Arc<Capacity>>,
}

/// An app server's capacity: `workers` orders applied at once (each taking the delay), at
/// most `room` held in all (the rest waiting for a worker); one more is shed with 503.
struct Capacity {
    workers: tokio::sync::Semaphore,
    room: usize,
    held: std::sync::atomic::AtomicUsize,
    shed: AtomicU64,
}

/// A backend's faults, switched live.
#[derive(Default)]
struct Faults {
    /// Answer every order 503 without applying it.
    failing: AtomicBool,
    /// Extra milliseconds each order takes.
    slow_ms: AtomicU64,
}

impl DemoBackend {
    /// A backend that takes `delay` to answer each order.
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Refuses orders (401) unless signed with `secret` within `tolerance` of now, as a
    /// real backend should once `delivery.signing_secret` is set.
    pub fn verifying(mut self, secret: &str, tolerance: Duration) -> Self {
        self.verify = Signer::new(secret).map(|s| (s, tolerance));
        self
    }

    /// Serves at most `workers` orders at once with `queue` more waiting, and sheds the rest
    /// with 503 (as most app servers and their balancers do).
    pub fn with_capacity(mut self, workers: usize, queue: usize) -> Self {
        self.capacity = Some(Arc::new(Capacity {
            workers: tokio::sync::Semaphore::new(workers.max(1)),
            room: workers.max(1) + queue,
            held: Default::default(),
            shed: AtomicU64::new(0),
        }));
        self
    }

    /// Orders shed with 503 because the backend held all it could.
    pub fn shed(&self) -> u64 {
        self.capacity
            .as_ref()
            .map_or(0, |c| c.shed.load(Ordering::Relaxed))
    }

    /// While `failing`, every order is answered 503 and not applied (a backend that is up
    /// but broken); the gateway must retry.
    pub fn set_failing(&self, failing: bool) {
        self.faults.failing.store(failing, Ordering::Release);
    }

    /// Each order takes `extra` longer to apply (zero: back to normal).
    pub fn set_slow(&self, extra: Duration) {
        let ms = u64::try_from(extra.as_millis()).unwrap_or(u64::MAX);
        self.faults.slow_ms.store(ms, Ordering::Release);
    }

    /// Orders recorded (without duplicates).
    pub fn orders(&self) -> u64 {
        let l = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        l.by_sku.values().sum()
    }

    /// The orders of `sku` applied so far, in the order they were applied: (order id,
    /// when it arrived in Unix ms).
    pub fn applied(&self, sku: &str) -> Vec<(String, u64)> {
        let l = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        l.orders
            .iter()
            .filter(|a| a.sku == sku)
            .map(|a| (a.order_id.clone(), a.arrived_ms))
            .collect()
    }

    /// Records that order `id` was cancelled (the buyer never paid, and the gateway took
    /// its units back); false if no such order was applied.
    pub fn cancel(&self, id: &str) -> bool {
        let mut l = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        let found = l.orders.iter_mut().find(|a| a.order_id == id);
        match found {
            Some(a) => {
                a.cancelled = true;
                true
            }
            None => false,
        }
    }

    /// When each order of `sku` first arrived (Unix ms, ascending), once applied.
    pub fn arrivals(&self, sku: &str) -> Vec<u64> {
        let l = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        let mut at: Vec<u64> = l
            .orders
            .iter()
            .filter(|a| a.sku == sku)
            .map(|a| a.arrived_ms)
            .collect();
        // Orders are applied in the order their (possibly delayed) handling finished.
        at.sort_unstable();
        at
    }

    async fn record(&self, req: Request<RequestBody>) -> GatewayResponse {
        // Stamped before the body is read or the delay slept, so it is when the order
        // reached the backend, not how long the backend took with it.
        let arrived_ms = crate::types::unix_millis(std::time::SystemTime::now());
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let signature: Vec<_> = req
            .headers()
            .get_all(&FLASHGATE_SIGNATURE)
            .iter()
            .cloned()
            .collect();
        let Some(key) = key else {
            return json(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "missing Idempotency-Key" }),
            );
        };
        let body = match Limited::new(req.into_body(), 16 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &json!({ "error": "unreadable body" }),
                )
            }
        };
        if let Some((signer, tolerance)) = &self.verify {
            let now = crate::types::unix_millis(std::time::SystemTime::now()) / 1000;
            let mut sent = signature.iter();
            let value = sent.next().filter(|_| sent.next().is_none());
            if let Err(e) = signer.verify(value, &body, now, *tolerance) {
                return json(
                    StatusCode::UNAUTHORIZED,
                    &json!({ "error": e.to_string(), "order_id": key }),
                );
            }
        }
        let order: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return json(StatusCode::BAD_REQUEST, &json!({ "error": "not JSON" })),
        };
        let delay = self.delay + Duration::from_millis(self.faults.slow_ms.load(Ordering::Acquire));
        if let Some(c) = &self.capacity {
            if c.held.fetch_add(1, Ordering::AcqRel) >= c.room {
                c.held.fetch_sub(1, Ordering::AcqRel);
                c.shed.fetch_add(1, Ordering::Relaxed);
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "error": "the backend is busy (load-test capacity)" }),
                );
            }
            if let Ok(_worker) = c.workers.acquire().await {
                tokio::time::sleep(delay).await;
            }
            c.held.fetch_sub(1, Ordering::AcqRel);
        } else if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.faults.failing.load(Ordering::Acquire) {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "error": "the backend is failing (load-test fault)" }),
            );
        }
        let field = |name: &str| order[name].as_str().unwrap_or("").to_owned();
        let mut l = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        // Past its `expires_at` a new order is refused for good (the gateway may give its
        // stock back once told so); one applied before is acknowledged as ever.
        let expired = order["expires_at"]
            .as_u64()
            .is_some_and(|at| crate::types::unix_millis(std::time::SystemTime::now()) > at);
        if expired && !l.keys.contains(&key) {
            return json(
                StatusCode::GONE,
                &json!({ "error": "expired", "order_id": key }),
            );
        }
        if !l.keys.insert(key.clone()) {
            l.duplicates += 1;
            return json(
                StatusCode::OK,
                &json!({ "order_id": key, "duplicate": true }),
            );
        }
        let applied = Applied {
            order_id: key.clone(),
            sku: field("sku"),
            user_id: field("user_id"),
            quantity: order["quantity"].as_u64().unwrap_or(1),
            arrived_ms,
            cancelled: false,
        };
        *l.by_sku.entry(applied.sku.clone()).or_default() += 1;
        l.orders.push(applied);
        json(StatusCode::CREATED, &json!({ "order_id": key }))
    }

    fn stats(&self) -> GatewayResponse {
        let l = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        json(
            StatusCode::OK,
            &json!({
                "orders": l.by_sku.values().sum::<u64>(),
                "duplicates": l.duplicates,
                "by_sku": l.by_sku,
            }),
        )
    }

    /// Every applied order, for load tests that check who bought what.
    fn ledger(&self) -> GatewayResponse {
        let l = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        json(
            StatusCode::OK,
            &json!({ "orders": l.orders, "duplicates": l.duplicates }),
        )
    }
}

impl Handler for DemoBackend {
    async fn handle(&self, req: Request<RequestBody>, _peer: &Peer) -> GatewayResponse {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/orders") => self.record(req).await,
            (&Method::GET, "/orders/stats") => self.stats(),
            (&Method::GET, "/orders/ledger") => self.ledger(),
            (&Method::GET, "/") => {
                let mut r = GatewayResponse::new(Either::Right(Full::new(Bytes::from_static(
                    b"flashgate demo backend: everything that is not a sale route lands here\n",
                ))));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain"),
                );
                r
            }
            _ => json(StatusCode::NOT_FOUND, &json!({ "error": "not_found" })),
        }
    }
}

/// Serves `backend` on `addr`; it stops with `shutdown`.
pub async fn serve_backend(
    addr: SocketAddr,
    backend: DemoBackend,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, DemoBackend, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let limits = ConnectionLimits {
        max_connections: 1024,
        header_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(5),
        ..ConnectionLimits::from_config(&crate::config::ServerConfig::default())
    };
    let task = tokio::spawn(server::serve(
        listener,
        backend.clone(),
        limits,
        server::Edge::default(),
        server::ListenerMetrics::unregistered(),
        shutdown,
    ));
    Ok((bound, backend, task))
}
