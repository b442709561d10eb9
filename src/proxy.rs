//! Reverse proxy for every request that is not a sale route: pooled keep-alive client,
//! bodies streamed both ways, hop-by-hop headers stripped, `X-Forwarded-*` added.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version};
use http_body_util::{Either, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{ServerConfig, UpstreamConfig};
use crate::error::GatewayError;
use crate::response::GatewayResponse;

/// Request body as sent upstream: the client's body, cut off at `server.body_limit`.
pub type UpstreamBody = Limited<Incoming>;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), never forwarded.
fn hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Forwards requests to the configured upstream.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, UpstreamBody>,
    scheme: Scheme,
    authority: Authority,
    /// Path the upstream URL carries, prefixed to every forwarded path; empty for `/`.
    prefix: String,
    timeout: Duration,
    body_limit: u64,
    preserve_host: bool,
}

impl Proxy {
    /// Builds the pooled client; the URL was checked by config validation.
    pub fn new(upstream: &UpstreamConfig, server: &ServerConfig) -> Result<Self, GatewayError> {
        let uri: Uri = upstream
            .url
            .parse()
            .map_err(|_| GatewayError::BadRequest("upstream.url is not a URL"))?;
        let parts = uri.into_parts();
        let authority = parts
            .authority
            .ok_or(GatewayError::BadRequest("upstream.url has no host"))?;
        let prefix = parts
            .path_and_query
            .map(|pq| pq.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(upstream.pool_idle_timeout)
            .pool_max_idle_per_host(upstream.pool_size)
            .build(connector);
        Ok(Self {
            client,
            scheme: parts.scheme.unwrap_or(Scheme::HTTP),
            authority,
            prefix,
            timeout: upstream.timeout,
            body_limit: server.body_limit,
            preserve_host: upstream.preserve_host,
        })
    }

    /// The upstream's `host:port`, for readiness checks.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Sends `req` upstream and streams the answer back, or answers the failure.
    pub async fn forward(&self, req: Request<Incoming>, peer: SocketAddr) -> GatewayResponse {
        match self.try_forward(req, peer).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    async fn try_forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<GatewayResponse, GatewayError> {
        let (mut parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return Err(GatewayError::BadRequest("CONNECT is not proxied"));
        }
        if declared_length(&parts.headers).is_some_and(|len| len > self.body_limit) {
            return Err(GatewayError::BodyTooLarge {
                limit: self.body_limit,
            });
        }
        // The client's view of the host: its Host header, or the h2 :authority.
        let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        strip_hop_by_hop(&mut parts.headers);
        append_forwarded_for(&mut parts.headers, peer);
        parts
            .headers
            .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        match client_host {
            Some(host) => {
                parts.headers.insert(X_FORWARDED_HOST.clone(), host.clone());
                if self.preserve_host {
                    parts.headers.insert(header::HOST, host);
                } else {
                    parts.headers.remove(header::HOST);
                }
            }
            None => {
                parts.headers.remove(header::HOST);
            }
        }
        parts.uri = self.upstream_uri(&parts.uri)?;
        // The upstream leg is HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;

        let upstream_req = Request::from_parts(parts, Limited::new(body, self.body_limit as usize));
        let resp = match tokio::time::timeout(self.timeout, self.client.request(upstream_req)).await
        {
            Err(_) => {
                tracing::warn!(upstream = %self.authority, "upstream timed out");
                return Err(GatewayError::UpstreamTimeout(self.timeout));
            }
            Ok(Err(e)) if caused_by_body_limit(&e) => {
                return Err(GatewayError::BodyTooLarge {
                    limit: self.body_limit,
                })
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.authority, error = %error_chain(&e), "upstream request failed");
                return Err(GatewayError::UpstreamUnavailable);
            }
            Ok(Ok(resp)) => resp,
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(GatewayResponse::from_parts(parts, Either::Left(body)))
    }

    fn upstream_uri(&self, original: &Uri) -> Result<Uri, GatewayError> {
        let pq = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let pq = if self.prefix.is_empty() {
            pq
        } else {
            PathAndQuery::try_from(format!("{}{}", self.prefix, pq.as_str()))
                .map_err(|_| GatewayError::BadRequest("request path cannot be forwarded"))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
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

/// Removes hop-by-hop headers, including those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are hop-by-hop too; collect them before removing it.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
}

/// Appends the client's address to X-Forwarded-For, keeping what earlier proxies wrote.
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        ip
    } else {
        format!("{}, {ip}", prior.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

fn caused_by_body_limit(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<LengthLimitError>() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, keep-alive"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::TE).is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-kept").is_some());
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        append_forwarded_for(&mut h, "127.0.0.1:5".parse().expect("addr"));
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 127.0.0.1");
    }
}
