//! What the proxy refuses to forward, before anything reaches the upstream: CONNECT, and
//! writes to the backend's own order intake or below it, which only the deliverer may reach
//! (else a client could order past admission, stock and limits). The path it reads is the
//! normalised one ([`crate::path`]), which is also the one forwarded; the backend can tell
//! the deliverer's own requests by their signature (`delivery.signing_secret`).
//!
//! Ambiguous framing is settled before a request gets here: hyper frames a request with
//! both Content-Length and Transfer-Encoding by the latter alone, drops the length and
//! closes the connection after answering (RFC 9112 §6.3), refuses a Transfer-Encoding that
//! does not end in chunked and differing lengths with 400; the proxy re-frames every body
//! it forwards, so the upstream never sees the client's framing.

use std::borrow::Cow;

use http::request::Parts;
use http::Method;

use crate::error::GatewayError;

/// Checks a request head before it is forwarded.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The segments of the backend's order intake path (`delivery.path`), lower-cased;
    /// None when orders do not reach the backend over HTTP.
    intake: Option<Vec<String>>,
}

impl Guard {
    /// A guard that also keeps clients' writes off `intake` and everything under it.
    pub fn new(intake: Option<&str>) -> Self {
        Self {
            intake: intake.map(|path| {
                let path = path.split('?').next().unwrap_or(path);
                let path = crate::path::normalise(path)
                    .map(|p| p.into_owned())
                    .unwrap_or_else(|_| path.to_owned());
                path.split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_ascii_lowercase)
                    .collect()
            }),
        }
    }

    /// Ok when a request for `path` (already normalised, see [`crate::path`]) may be
    /// forwarded; the refusal otherwise.
    pub fn check(&self, parts: &Parts, path: &str) -> Result<(), GatewayError> {
        if parts.method == Method::CONNECT {
            return Err(GatewayError::BadRequest("CONNECT is not proxied"));
        }
        if let Some(intake) = &self.intake {
            if writes(&parts.method) && reaches(path, intake) {
                return Err(GatewayError::NotFound);
            }
        }
        Ok(())
    }
}

/// Methods a backend may create an order with, in any case (a lenient server may upper-case
/// an extension method such as `post`).
fn writes(method: &Method) -> bool {
    ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| method.as_str().eq_ignore_ascii_case(m))
}

/// Whether a lenient backend could route `path` to the intake or below it. Each segment
/// is compared in every way such a backend may read it ([`crate::path::Reading`]:
/// decoded, with and without NFKC, with combining marks dropped; case folded; whitespace
/// trimmed), and matches with anything but a letter, digit, `-` or `_` after it
/// ([`crate::path::reads_as`]: `orders;x`, `orders.json`, `orders%3Bx`, `orders%CC%81`),
/// since some backend strips it. ASCII segments without escapes, nearly all, are read
/// once, in place.
fn reaches(path: &str, intake: &[String]) -> bool {
    let segments: Vec<Vec<Cow<'_, str>>> = path.split('/').map(readings).collect();
    // A segment that is only whitespace or `;parameters` in some reading is as good as
    // none to such a backend (Tomcat strips `;x` and then merges the slashes: `/;x/orders`
    // is `/orders`), so it may be skipped or not: `from[i]` says whether segments `i..`
    // can be read as the intake's segments `j..`, for the current `j`, right to left.
    let mut from = vec![true; segments.len() + 1];
    for j in (0..intake.len()).rev() {
        let mut next = vec![false; segments.len() + 1];
        for i in (0..segments.len()).rev() {
            let read = &segments[i];
            let skippable = read
                .iter()
                .any(|r| r.split(';').next().unwrap_or_default().trim().is_empty());
            next[i] = (skippable && next[i + 1])
                || (from[i + 1] && read.iter().any(|r| crate::path::reads_as(r, &intake[j])));
        }
        from = next;
    }
    // The intake itself or a path below it.
    from[0]
}

/// The ways a lenient backend may read `segment`: itself when plain ASCII, else each
/// [`crate::path::Reading`] of it.
fn readings(segment: &str) -> Vec<Cow<'_, str>> {
    if !segment.contains('%') && segment.is_ascii() {
        return vec![Cow::Borrowed(segment)];
    }
    crate::path::Reading::ALL
        .iter()
        .map(|&r| Cow::Owned(crate::path::fold_as(segment, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(g: &Guard, method: &str, raw: &str) -> Result<(), GatewayError> {
        let req = http::Request::builder()
            .method(method)
            .uri(raw)
            .body(())
            .expect("request");
        let mut parts = req.into_parts().0;
        crate::path::normalise_uri(&mut parts.uri).expect("normal path");
        g.check(&parts, parts.uri.path())
    }

    #[test]
    fn the_order_intake_is_kept_from_clients_in_every_spelling() {
        let g = Guard::new(Some("/orders"));
        for p in [
            "/orders",
            "/Orders",
            "//orders",
            "/orders/",
            "/ORDERS//",
            "/%6frders",
            "/%6Frders",
            "/orders;x",
            "/orders;jsessionid=1/",
            "/orders.json",
            "/orders.",
            "/orders%20",
            "/orders:create",
            "/orders%CC%81",
            "/orders%CC%8C",
            "/orders%CC%A7",
            "/orders%CC%87",
            "/orders%CC%B8",
            "/%CC%81/orders",
            "/%F3%A0%80%81orders",
            "/ord%F3%A0%80%81ers",
            "/orders%F0%9D%85%B3",
            "/%F0%9B%B2%A0orders",
            "/ord%F3%A0%BF%BFers",
            "/orders~",
            "/orders/history",
            "/orders;a/b",
            "/%20orders",
            "/%20/orders",
            "/%C2%A0orders",
            "/order%C5%BF",
            "/%EF%BD%8Frders",
            "/;x/orders",
            "/;/orders",
            "/%3B/orders",
            "/%E2%80%8Borders",
            "/%EF%BB%BForders",
            "/ord%C2%ADers",
        ] {
            for m in ["POST", "PUT", "PATCH", "post"] {
                assert!(
                    matches!(check(&g, m, p), Err(GatewayError::NotFound)),
                    "{m} {p}"
                );
            }
        }
        for p in ["/orders", "/orders.json", "/orders/1"] {
            assert!(check(&g, "GET", p).is_ok(), "reading is not ordering: {p}");
        }
        for p in [
            "/orders-history",
            "/orders_v2",
            "/ordersx",
            "/order",
            "/x/orders",
        ] {
            assert!(check(&g, "POST", p).is_ok(), "{p} is another path");
        }
        assert!(check(&Guard::new(None), "POST", "/orders").is_ok());
    }

    #[test]
    fn a_nested_intake_matches_on_every_segment() {
        let g = Guard::new(Some("/api/v1.0/Orders/"));
        for p in [
            "/api/v1.0/orders",
            "/API;x/v1.0/orders.xml",
            "/api/v1.0/orders/7",
        ] {
            assert!(check(&g, "POST", p).is_err(), "{p}");
        }
        for p in ["/api/v1.0", "/api/v1.0x/orders", "/api/v1/orders"] {
            assert!(check(&g, "POST", p).is_ok(), "{p}");
        }
    }

    #[test]
    fn connect_is_refused() {
        assert!(check(&Guard::new(None), "CONNECT", "example.com:443").is_err());
    }
}
