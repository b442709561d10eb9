//! What the proxy refuses to forward, before anything reaches the upstream: paths an
//! upstream could normalise into somewhere else, and POSTs to the backend's own order
//! intake, which only the deliverer may reach (else a client could order past admission,
//! stock and limits).
//!
//! Ambiguous framing is settled before a request gets here: hyper frames a request with
//! both Content-Length and Transfer-Encoding by the latter alone, drops the length and
//! closes the connection after answering (RFC 9112 §6.3), refuses a Transfer-Encoding that
//! does not end in chunked and differing lengths with 400; the proxy re-frames every body
//! it forwards, so the upstream never sees the client's framing.

use http::request::Parts;
use http::Method;

use crate::error::GatewayError;

/// Checks a request head before it is forwarded.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The backend's order intake path (`delivery.path`), normalised; None when orders do
    /// not reach the backend over HTTP.
    intake: Option<String>,
}

impl Guard {
    /// A guard that also keeps clients' POSTs off `intake`.
    pub fn new(intake: Option<&str>) -> Self {
        Self {
            intake: intake.map(normalise),
        }
    }

    /// Ok when `parts` may be forwarded; the refusal otherwise.
    pub fn check(&self, parts: &Parts) -> Result<(), GatewayError> {
        if parts.method == Method::CONNECT {
            return Err(GatewayError::BadRequest("CONNECT is not proxied"));
        }
        let path = parts.uri.path();
        if has_dot_segment(path) {
            return Err(GatewayError::BadRequest("the path has dot segments"));
        }
        if let Some(intake) = &self.intake {
            if parts.method == Method::POST && same_path(path, intake) {
                return Err(GatewayError::NotFound);
            }
        }
        Ok(())
    }
}

/// True when a segment is `.` or `..`, also percent-encoded (`%2e`, any case). Runs on
/// every proxied request, so it reads the bytes in place and allocates nothing.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let b = segment.as_bytes();
        if b.is_empty() || b.len() > 6 {
            return false;
        }
        let (mut dots, mut i) = (0, 0);
        while i < b.len() {
            if b[i] == b'.' {
                i += 1;
            } else if b[i] == b'%'
                && b.get(i + 1) == Some(&b'2')
                && b.get(i + 2).map(|c| c | 0x20) == Some(b'e')
            {
                i += 3;
            } else {
                return false;
            }
            dots += 1;
        }
        dots <= 2
    })
}

/// Whether `path`, read leniently (case-insensitive, repeated and trailing slashes
/// ignored), is `normalised` (as made by [`normalise`]); compares in place.
fn same_path(path: &str, normalised: &str) -> bool {
    let mut theirs = path.split('/').filter(|s| !s.is_empty());
    let mut ours = normalised.split('/').filter(|s| !s.is_empty());
    loop {
        match (theirs.next(), ours.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => {}
            _ => return false,
        }
    }
}

/// Lower case, repeated slashes collapsed, no trailing slash: how a lenient upstream may
/// see a path.
fn normalise(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(&segment.to_ascii_lowercase());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        let g = Guard::new(None);
        for p in [
            "/a/../orders",
            "/a/./b",
            "/..",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/.%2e",
        ] {
            assert!(g.check(&parts("GET", p, &[])).is_err(), "{p}");
        }
        for p in [
            "/a/..b/c",
            "/a/b.c",
            "/.well-known/x",
            "/a/...",
            "/",
            "/a/%2",
            "/a/%2e%2e%2e",
            "/%2f",
        ] {
            assert!(g.check(&parts("GET", p, &[])).is_ok(), "{p}");
        }
    }

    #[test]
    fn the_order_intake_is_kept_from_clients() {
        let g = Guard::new(Some("/orders"));
        for p in ["/orders", "/Orders", "//orders", "/orders/", "/ORDERS//"] {
            assert!(
                matches!(g.check(&parts("POST", p, &[])), Err(GatewayError::NotFound)),
                "{p}"
            );
        }
        assert!(
            g.check(&parts("GET", "/orders", &[])).is_ok(),
            "reading is not ordering"
        );
        assert!(g.check(&parts("POST", "/orders/history", &[])).is_ok());
        assert!(Guard::new(None)
            .check(&parts("POST", "/orders", &[]))
            .is_ok());
    }

    #[test]
    fn connect_is_refused() {
        assert!(Guard::new(None)
            .check(&parts("CONNECT", "example.com:443", &[]))
            .is_err());
    }
}
