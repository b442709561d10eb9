//! An order backend of known capacity, like an app server in front of a database:
//! `workers` orders served at once, each taking `service`, at most `queue` more waiting for
//! a worker; an order beyond that is shed with 503 (and `Retry-After` when asked), as most
//! app servers and their balancers do. It records what a test asserts on: the orders it
//! took, the 503s, the most it ever held at once and when each POST arrived.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the backend saw.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Order ids it took (by Idempotency-Key).
    pub taken: HashSet<String>,
    /// POSTs it shed with 503.
    pub shed: usize,
    /// The most orders it held at once (served and waiting).
    pub most_held: usize,
    /// When each POST arrived.
    pub arrivals: Vec<Instant>,
    held: usize,
}

/// How it sheds: the first `shed_first` POSTs are answered 503 whatever the load; every
/// 503 carries `Retry-After: retry_after` when that is set. The orders of user `stuck`
/// are answered 500 forever (their fate unknown: the gateway asks again and again).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shedding {
    /// POSTs answered 503 from the start.
    pub shed_first: usize,
    /// Seconds of `Retry-After` on each 503.
    pub retry_after: Option<u64>,
    /// A user whose orders are answered 500, always.
    pub stuck: Option<&'static str>,
}

/// A backend of known capacity on a loopback port.
pub struct CapacityBackend {
    /// Its address.
    pub addr: SocketAddr,
    ledger: Arc<Mutex<Ledger>>,
    serving: Serving,
}

#[derive(Clone)]
struct Serving {
    workers: Arc<Semaphore>,
    /// Workers now, and the queue beside them.
    staff: Arc<AtomicUsize>,
    queue: usize,
    /// Each order's service time, µs.
    service_us: Arc<AtomicU64>,
    shedding: Shedding,
    ledger: Arc<Mutex<Ledger>>,
}

impl CapacityBackend {
    /// `workers` serving `service` each, `queue` more waiting.
    pub async fn start(
        workers: usize,
        queue: usize,
        service: Duration,
        shedding: Shedding,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let serving = Serving {
            workers: Arc::new(Semaphore::new(workers)),
            staff: Arc::new(AtomicUsize::new(workers)),
            queue,
            service_us: Arc::new(AtomicU64::new(service.as_micros() as u64)),
            shedding,
            ledger: ledger.clone(),
        };
        let accepting = serving.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let serving = accepting.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let serving = serving.clone();
                        async move { Ok::<_, Infallible>(serve(serving, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            ledger,
            serving,
        }
    }

    /// Takes `service` an order from now on.
    pub fn set_service(&self, service: Duration) {
        let us = service.as_micros() as u64;
        self.serving.service_us.store(us, Ordering::SeqCst);
    }

    /// Serves with `workers` from now on (the queue beside them stays): a backend that
    /// lost half its servers, or got them back.
    pub fn set_workers(&self, workers: usize) {
        let s = &self.serving;
        let before = s.staff.swap(workers, Ordering::SeqCst);
        if workers > before {
            s.workers.add_permits(workers - before);
        } else if workers < before {
            let (gone, pool) = ((before - workers) as u32, s.workers.clone());
            tokio::spawn(async move {
                if let Ok(p) = pool.acquire_many_owned(gone).await {
                    p.forget();
                }
            });
        }
    }

    /// Its URL, for `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it saw so far.
    pub fn ledger(&self) -> Ledger {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn serve(s: Serving, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(user) = s.shedding.stuck {
        let order: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if order["user_id"] == user {
            let mut r = Response::new(Full::new(Bytes::from_static(b"unknown")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return r;
        }
    }
    let admitted = {
        let mut l = s.ledger.lock().unwrap_or_else(|e| e.into_inner());
        l.arrivals.push(Instant::now());
        let room = s.staff.load(Ordering::SeqCst) + s.queue;
        let shed = l.arrivals.len() <= s.shedding.shed_first || l.held >= room;
        if shed {
            l.shed += 1;
        } else {
            l.held += 1;
            l.most_held = l.most_held.max(l.held);
        }
        !shed
    };
    if !admitted {
        let mut r = Response::new(Full::new(Bytes::from_static(b"busy")));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        if let Some(secs) = s.shedding.retry_after {
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                secs.to_string().parse().expect("header"),
            );
        }
        return r;
    }
    {
        let _worker = s.workers.acquire().await.expect("workers");
        let us = s.service_us.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
    let mut l = s.ledger.lock().unwrap_or_else(|e| e.into_inner());
    l.held -= 1;
    l.taken.insert(key);
    let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
    *r.status_mut() = StatusCode::CREATED;
    r
}
