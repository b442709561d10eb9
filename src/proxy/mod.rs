//! Reverse proxy for every request that is not a sale route: pooled keep-alive client,
//! bodies streamed both ways, hop-by-hop headers stripped, `X-Forwarded-*` added.

mod guard;
mod headers;

use std::error::Error as StdError;
use std::time::Duration;

use crate::http::RequestBody;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Uri, Version};
use http_body_util::{Either, LengthLimitError, Limited};

use crate::config::{ServerConfig, UpstreamConfig};
use crate::error::GatewayError;
use crate::http::deadline::{BodyTimedOut, ClientBodyBroken, Deadline};
use crate::http::response::GatewayResponse;
use crate::http::server::Peer;
use crate::http::{Pool, UpstreamBody, UpstreamError, UpstreamTarget};
use crate::log_throttle::warn_repeated;
pub use guard::Guard;

use headers::strip_hop_by_hop;
pub use headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP};

/// Forwards requests to the configured upstream.
#[derive(Clone)]
pub struct Proxy {
    pool: Pool<UpstreamBody>,
    authority: Authority,
    /// The upstream's own `host:port`, sent as Host when the client's is not preserved.
    upstream_host: HeaderValue,
    /// Path the upstream URL carries, prefixed to every forwarded path; empty for `/`.
    prefix: String,
    timeout: Duration,
    body_limit: u64,
    body_timeout: Duration,
    preserve_host: bool,
    guard: Guard,
    /// The identity header, which a client's `Connection` option cannot strip.
    identity: http::HeaderName,
}

impl Proxy {
    /// Builds the connection pool to `target`, with `[upstream]`'s settings and
    /// `[server]`'s body bounds.
    pub fn new(target: &UpstreamTarget, upstream: &UpstreamConfig, server: &ServerConfig) -> Self {
        let pool = Pool::new(
            target.authority.clone(),
            upstream.pool_size,
            upstream.max_connections,
            upstream.pool_idle_timeout,
            upstream.connect_timeout,
        );
        Self {
            pool,
            authority: target.authority.clone(),
            upstream_host: target.host.clone(),
            prefix: target.prefix.clone(),
            timeout: upstream.timeout,
            body_limit: server.body_limit,
            body_timeout: server.body_timeout,
            preserve_host: upstream.preserve_host,
            guard: Guard::default(),
            identity: http::HeaderName::from_static("x-user-id"),
        }
    }

    /// Refuses clients' POSTs to the backend's order intake (`delivery.path`).
    pub fn guarding_intake(mut self, intake: Option<&str>) -> Self {
        self.guard = Guard::new(intake);
        self
    }

    /// Keeps the identity header `name` from being stripped by a client's `Connection`.
    pub fn keeping_identity(mut self, name: &str) -> Self {
        if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
            self.identity = name;
        }
        self
    }

    /// The upstream's `host:port`, for readiness checks.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Idle keep-alive connections to the upstream right now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    /// Sends `req` upstream and streams the answer back, or answers the failure. Its path
    /// must be normalised already ([`crate::path::normalise_uri`]): the gateway does that
    /// once, before routing, and the guard reads that same path.
    pub async fn forward(&self, req: Request<RequestBody>, peer: &Peer) -> GatewayResponse {
        match self.try_forward(req, peer).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    async fn try_forward(
        &self,
        req: Request<RequestBody>,
        peer: &Peer,
    ) -> Result<GatewayResponse, GatewayError> {
        let (mut parts, body) = req.into_parts();
        // The guard is sound only on the normalised path, which the caller made.
        debug_assert_eq!(
            crate::path::normalise(parts.uri.path()).as_deref(),
            Ok(parts.uri.path())
        );
        if let Err(e) = self.guard.check(&parts, parts.uri.path()) {
            return Ok(e.into_closing_response());
        }
        if declared_length(&parts.headers).is_some_and(|len| len > self.body_limit) {
            return Err(GatewayError::BodyTooLarge {
                limit: self.body_limit,
            });
        }
        let client_host = match headers::client_host(&parts) {
            Ok(h) => h,
            Err(e) => return Ok(e.into_closing_response()),
        };
        let h = &mut parts.headers;
        strip_hop_by_hop(h, &[&self.identity]);
        if parts.version == Version::HTTP_2 {
            headers::join_cookies(h);
        }
        headers::set_forwarding(h, peer);
        match client_host {
            Some(host) => {
                if peer.via.is_none() || !h.contains_key(&X_FORWARDED_HOST) {
                    h.insert(X_FORWARDED_HOST.clone(), host.clone());
                }
                let sent = if self.preserve_host {
                    host
                } else {
                    self.upstream_host.clone()
                };
                h.insert(header::HOST, sent);
            }
            None => {
                h.insert(header::HOST, self.upstream_host.clone());
            }
        }
        parts.uri = self.upstream_target(&parts.uri)?;
        // The upstream leg is HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;

        let upstream_req = Request::from_parts(
            parts,
            Limited::new(
                Deadline::new(body, self.body_timeout),
                self.body_limit as usize,
            ),
        );
        let resp = match tokio::time::timeout(self.timeout, self.pool.send(upstream_req)).await {
            Err(_) => {
                warn_repeated!("upstream timed out", upstream = %self.authority);
                return Err(GatewayError::UpstreamTimeout(self.timeout));
            }
            Ok(Err(UpstreamError::Busy)) => return Err(GatewayError::UpstreamBusy),
            Ok(Err(e)) if caused_by_body_limit(&e) => {
                return Err(GatewayError::BodyTooLarge {
                    limit: self.body_limit,
                })
            }
            Ok(Err(e)) if caused_by::<BodyTimedOut>(&e) => {
                return Err(GatewayError::RequestTimeout);
            }
            Ok(Err(e)) if caused_by::<ClientBodyBroken>(&e) => {
                // The client's own body failed (malformed framing, reset, cut off): its
                // doing, not the upstream's, and at the client's rate: not worth a warning.
                tracing::debug!(error = %error_chain(&e), "request body failed while proxied");
                return Err(GatewayError::BadRequest(
                    "the request body is malformed or was cut off",
                ));
            }
            Ok(Err(e)) => {
                warn_repeated!("upstream request failed", upstream = %self.authority, error = %error_chain(&e));
                return Err(GatewayError::UpstreamUnavailable);
            }
            Ok(Ok(resp)) => resp,
        };
        let (mut parts, body) = resp.into_parts();
        // Both framings: the body was read by Transfer-Encoding, so the length is stale
        // and must not reach the client (RFC 9112 §6.3).
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        strip_hop_by_hop(&mut parts.headers, &[]);
        Ok(GatewayResponse::from_parts(parts, Either::Left(body)))
    }

    /// The origin-form request target sent upstream: the prefix, then the client's path and query.
    fn upstream_target(&self, original: &Uri) -> Result<Uri, GatewayError> {
        let pq = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if self.prefix.is_empty() {
            return Ok(Uri::from(pq));
        }
        Uri::try_from(format!("{}{}", self.prefix, pq.as_str()))
            .map_err(|_| GatewayError::BadRequest("request path cannot be forwarded"))
    }
}

/// The Content-Length a request declares, if it declares a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn caused_by_body_limit(e: &(dyn StdError + 'static)) -> bool {
    caused_by::<LengthLimitError>(e)
}

/// Whether an error of type `T` is anywhere in `e`'s chain.
fn caused_by<T: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}
