//! Where `upstream.url` points, parsed once for the proxy, the deliverer and the readiness
//! probe.

use http::header::HeaderValue;
use http::uri::Authority;
use http::Uri;

use crate::error::GatewayError;

/// Where `upstream.url` points: shared by the proxy and the deliverer.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// `host:port`, to connect to.
    pub authority: Authority,
    /// The same as a Host header value.
    pub host: HeaderValue,
    /// The URL's path without a trailing slash, prefixed to every request path.
    pub prefix: String,
}

impl UpstreamTarget {
    /// Parses the upstream URL (config validation has checked it already).
    pub fn parse(url: &str) -> Result<Self, GatewayError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| GatewayError::BadRequest("upstream.url is not a URL"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or(GatewayError::BadRequest("upstream.url has no host"))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| GatewayError::BadRequest("upstream.url has an invalid host"))?;
        Ok(Self {
            authority,
            host,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}
