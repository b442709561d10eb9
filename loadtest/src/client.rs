//! The crowd's HTTP client: keep-alive connections shared by every user, never more than
//! the scenario's `connections` requests in flight, every request bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::Semaphore;

/// An answer the gateway gave.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body (Null when the body was not JSON).
    pub body: Value,
    /// Seconds to wait before retrying, from Retry-After.
    pub retry_after: Option<u64>,
    /// Time from sending the request to the whole answer.
    pub took: Duration,
}

impl Answer {
    /// The contract's error code, or "ok" for a 2xx.
    pub fn code(&self) -> String {
        if self.status.is_success() {
            return "ok".into();
        }
        match self.body.get("error").and_then(Value::as_str) {
            Some(code) => code.to_owned(),
            None => format!("http_{}", self.status.as_u16()),
        }
    }

    /// A refusal the user makes up for itself: a gateway instance went away mid-request,
    /// and (as behind a load balancer) it will try another one.
    pub fn went_away() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: serde_json::json!({ "error": "instance_gone" }),
            retry_after: Some(1),
            took: Duration::ZERO,
        }
    }

    /// A string field of the body.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoAnswer {
    /// Connecting or the exchange failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// No complete answer within the request timeout.
    #[error("timed out")]
    Timeout,
}

/// The shared client.
#[derive(Clone)]
pub struct Crowd {
    client: Client<HttpConnector, Full<Bytes>>,
    permits: Arc<Semaphore>,
    base: String,
    identity_header: http::HeaderName,
    timeout: Duration,
}

impl Crowd {
    /// A client for the gateway at `base` (`http://host:port`).
    pub fn new(
        base: String,
        identity_header: &str,
        connections: usize,
        timeout: Duration,
    ) -> Result<Self, String> {
        let identity_header = http::HeaderName::try_from(identity_header)
            .map_err(|e| format!("identity header {identity_header:?}: {e}"))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            permits: Arc::new(Semaphore::new(connections)),
            base,
            identity_header,
            timeout,
        })
    }

    /// Sends one request as `user` and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        user: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Answer, NoAnswer> {
        // Closed only on drop, so acquire cannot fail while `self` lives.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| NoAnswer::Transport(e.to_string()))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(&self.identity_header, user);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| NoAnswer::Transport(e.to_string()))?;
        let started = Instant::now();
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| NoAnswer::Transport(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| NoAnswer::Transport(e.to_string()))?
                .to_bytes();
            Ok::<_, NoAnswer>((parts, bytes))
        };
        let (parts, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| NoAnswer::Timeout)??;
        let retry_after = parts
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(Answer {
            status: parts.status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            retry_after,
            took: started.elapsed(),
        })
    }
}

/// The client for side endpoints (admin API, `/metrics`, the demo backend): one for the
/// whole run, so its connections are reused between samples.
#[derive(Clone)]
pub struct Side {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Side {
    /// A client whose every request is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            timeout,
        }
    }

    /// GETs `url` (with an optional bearer token) and returns the body of a 2xx answer.
    pub async fn text(&self, url: &str, bearer: Option<&str>) -> Result<String, String> {
        let (status, body) = self.exchange(Method::GET, url, bearer, None, &[]).await?;
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}"));
        }
        Ok(body)
    }

    /// POSTs nothing to `url` (with an optional bearer token): the status and the JSON
    /// body (Null when it is not JSON), whatever the status.
    pub async fn post(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, Value), String> {
        self.call(Method::POST, url, bearer, None, &[]).await
    }

    /// Any request with an optional JSON body and extra headers: the status and the JSON
    /// answer (Null when it is not JSON), whatever the status.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, Value), String> {
        let (status, body) = self.exchange(method, url, bearer, body, headers).await?;
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// One request, bounded by the timeout: the status and the body as text.
    async fn exchange(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, String), String> {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(token) = bearer {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let bytes = match body {
            Some(v) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = builder.body(Full::new(bytes)).map_err(|e| e.to_string())?;
        let fetch = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| format!("{url}: timed out"))?
    }

    /// GETs `url` and parses the 2xx answer as JSON.
    pub async fn json(&self, url: &str, bearer: Option<&str>) -> Result<Value, String> {
        let text = self.text(url, bearer).await?;
        serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))
    }
}
