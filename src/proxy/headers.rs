//! Header rewriting between client and upstream: hop-by-hop removal, one policy for every
//! header that says where a request came from, the Host the upstream sees, and h2 cookies.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Version;

use crate::error::GatewayError;
use crate::http::server::Peer;

/// `X-Forwarded-For`: the chain of client addresses.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the Host the client asked for.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`: the port the client connected to.
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Real-IP`: the client's address alone.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Removes hop-by-hop headers, including those the Connection header names, except the
/// `kept` ones: a client's `Connection: x-user-id` must not strip the identity header that
/// the auth layer in front set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, kept: &[&HeaderName]) {
    // One pass without hashing finds whether there is anything to do; most messages
    // carry no hop-by-hop header at all.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| {
            *name != header::HOST && *name != header::CONTENT_LENGTH && !kept.contains(&name)
        })
        .collect();
    for name in named {
        headers.remove(name);
    }
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

/// One policy for every header that says where a request came from. From a client that
/// is not behind a trusted proxy, all of them (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`)
/// are the client's own claims and are replaced: `X-Forwarded-For` and `X-Real-IP` name the
/// peer, `X-Forwarded-Proto` the scheme it used. Behind a trusted proxy its chain is kept
/// and the proxy's address appended; what it says of the scheme, host and port stands.
/// `Flashgate-Signature` belongs to deliveries only and never passes.
pub fn set_forwarding(headers: &mut HeaderMap, peer: &Peer) {
    if headers.contains_key(&crate::signature::FLASHGATE_SIGNATURE) {
        headers.remove(&crate::signature::FLASHGATE_SIGNATURE);
    }
    let proto = HeaderValue::from_static(if peer.tls { "https" } else { "http" });
    match peer.via {
        Some(proxy) => {
            if let Ok(hop) = HeaderValue::from_str(&proxy.to_string()) {
                append_forwarded_for(headers, &hop);
            }
            if !headers.contains_key(&X_FORWARDED_PROTO) {
                headers.insert(X_FORWARDED_PROTO.clone(), proto);
            }
        }
        None => {
            // One pass without hashing: most requests carry none of these.
            let claimed = headers.keys().any(|n| {
                n == header::FORWARDED || *n == X_FORWARDED_HOST || *n == X_FORWARDED_PORT
            });
            if claimed {
                for name in [&header::FORWARDED, &X_FORWARDED_HOST, &X_FORWARDED_PORT] {
                    headers.remove(name);
                }
            }
            headers.insert(X_FORWARDED_FOR.clone(), peer.ip.clone());
            headers.insert(X_FORWARDED_PROTO.clone(), proto);
        }
    }
    headers.insert(X_REAL_IP.clone(), peer.ip.clone());
}

/// The host the client asked for: the request target's authority (absolute form, h2
/// `:authority`), which wins over `Host` (RFC 9112 §3.2.2), else its one `Host` header.
/// 400 for two Host headers, an invalid one, or none on HTTP/1.1 (RFC 9112 §3.2).
pub fn client_host(parts: &Parts) -> Result<Option<HeaderValue>, GatewayError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest("more than one Host header"));
    }
    if let Some(authority) = parts.uri.authority() {
        if authority.as_str().contains('@') {
            return Err(GatewayError::BadRequest("the request target has user info"));
        }
        return HeaderValue::from_str(authority.as_str())
            .map(Some)
            .map_err(|_| GatewayError::BadRequest("invalid authority"));
    }
    match first {
        Some(h) if h.is_empty() => Ok(None),
        Some(h) => {
            if is_authority(h.as_bytes()) {
                Ok(Some(h.clone()))
            } else {
                Err(GatewayError::BadRequest("invalid Host header"))
            }
        }
        None if parts.version == Version::HTTP_11 => {
            Err(GatewayError::BadRequest("the Host header is missing"))
        }
        None => Ok(None),
    }
}

/// Whether `b` is a `host[:port]` (RFC 3986 reg-name, IPv4 or bracketed IPv6) without user
/// info; checked in place, since every proxied request carries one.
fn is_authority(b: &[u8]) -> bool {
    let (host, port) = match b.first() {
        Some(b'[') => match b.iter().position(|&c| c == b']') {
            Some(end) => {
                let inner = &b[1..end];
                if inner.is_empty()
                    || !inner
                        .iter()
                        .all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'))
                {
                    return false;
                }
                (&b[..=end], &b[end + 1..])
            }
            None => return false,
        },
        _ => match b.iter().position(|&c| c == b':') {
            Some(i) => (&b[..i], &b[i..]),
            None => (b, &b[b.len()..]),
        },
    };
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host.iter().all(|&c| {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            }));
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok
}

/// Joins h2 `cookie` fields into one, as an HTTP/1.1 upstream expects (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Appends `ip` to X-Forwarded-For, keeping what earlier proxies wrote.
fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter();
    let Some(first) = prior.next() else {
        headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in prior {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(ip.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
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
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut h, &[]);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::TE).is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("proxy-connection").is_none());
        assert!(h.get("x-kept").is_some());
    }

    #[test]
    fn connection_cannot_strip_protected_headers() {
        let mut h = HeaderMap::new();
        let id = HeaderName::from_static("x-user-id");
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-user-id, host, content-length, x-other"),
        );
        h.insert(&id, HeaderValue::from_static("alice"));
        h.insert(header::HOST, HeaderValue::from_static("shop"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.insert("x-other", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, &[&id]);
        assert_eq!(h[&id], "alice");
        assert_eq!(h[header::HOST], "shop");
        assert_eq!(h[header::CONTENT_LENGTH], "2");
        assert!(h.get("x-other").is_none());
    }

    #[test]
    fn h2_cookies_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn the_host_is_checked_and_the_target_authority_wins() {
        let parts = |uri: &str, version: Version, hosts: &[&str]| {
            let mut b = http::Request::builder().uri(uri).version(version);
            for h in hosts {
                b = b.header(header::HOST, *h);
            }
            b.body(()).expect("request").into_parts().0
        };
        let host =
            |p: &Parts| client_host(p).map(|h| h.map(|v| v.to_str().unwrap_or("").to_owned()));
        assert_eq!(
            host(&parts("/", Version::HTTP_11, &["shop:8080"])).ok(),
            Some(Some("shop:8080".into()))
        );
        assert_eq!(
            host(&parts("http://real/x", Version::HTTP_11, &["other"])).ok(),
            Some(Some("real".into()))
        );
        assert_eq!(host(&parts("/", Version::HTTP_10, &[])).ok(), Some(None));
        for ok in [
            "[::1]:80",
            "127.0.0.1",
            "xn--bcher-kva.example:443",
            "a_b.local",
        ] {
            assert!(host(&parts("/", Version::HTTP_11, &[ok])).is_ok(), "{ok}");
        }
        for (uri, hosts) in [
            ("/", &[][..]),
            ("/", &["a", "b"][..]),
            ("/", &["a b"][..]),
            ("/", &["a/b?c#d"][..]),
            ("/", &["user@host"][..]),
            ("/", &["a:b"][..]),
            ("/", &["[::1"][..]),
            ("/", &["a:123456"][..]),
        ] {
            assert!(
                host(&parts(uri, Version::HTTP_11, hosts)).is_err(),
                "{hosts:?}"
            );
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let ip = HeaderValue::from_static("127.0.0.1");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 127.0.0.1");
    }
}
