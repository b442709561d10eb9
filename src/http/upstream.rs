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
        let given = uri
            .authority()
            .ok_or(GatewayError::BadRequest("upstream.url has no host"))?;
        if given.as_str().contains('@') {
            return Err(GatewayError::BadRequest(
                "upstream.url must not carry credentials",
            ));
        }
        let host = HeaderValue::from_str(given.as_str())
            .map_err(|_| GatewayError::BadRequest("upstream.url has an invalid host"))?;
        // What to connect to always has a port: http's 80 when the URL names none. A port
        // written but not one (empty, too large, zero, not a number) is refused.
        let written = &given.as_str()[given.host().len()..];
        let authority = match written.strip_prefix(':') {
            None => Authority::try_from(format!("{}:80", given.host()))
                .map_err(|_| GatewayError::BadRequest("upstream.url has an invalid host"))?,
            Some(port) if port.parse::<u16>().is_ok_and(|p| p > 0) => given.clone(),
            Some(_) => {
                return Err(GatewayError::BadRequest(
                    "upstream.url has a port that is not one (1-65535)",
                ))
            }
        };
        Ok(Self {
            authority,
            host,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adversarial review: a URL without a port was connected to as `host` alone, which
    /// no socket address parses from: every request 502.
    #[test]
    fn a_url_without_a_port_connects_to_port_80() {
        let t = UpstreamTarget::parse("http://127.0.0.1/api/").expect("url");
        assert_eq!(t.authority.as_str(), "127.0.0.1:80");
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.prefix, "/api");
        let t = UpstreamTarget::parse("http://[::1]").expect("url");
        assert_eq!(t.authority.as_str(), "[::1]:80");
        let t = UpstreamTarget::parse("http://127.0.0.1:9000").expect("url");
        assert_eq!(t.authority.as_str(), "127.0.0.1:9000");
        assert_eq!(t.host, "127.0.0.1:9000");
    }

    /// Adversarial review: a port that does not parse was taken for no port (port 80).
    #[test]
    fn a_port_that_is_not_one_is_refused() {
        for url in [
            "http://127.0.0.1:99999",
            "http://127.0.0.1:",
            "http://127.0.0.1:8o81",
            "http://127.0.0.1:0",
        ] {
            assert!(UpstreamTarget::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        assert!(UpstreamTarget::parse("http://u:p@127.0.0.1:9").is_err());
    }
}
