//! `flashgate demo` only: a browser that sends no identity header gets a random demo
//! identity, kept in a cookie, so that a newcomer can open the sale page, click Buy and
//! watch the waiting room without an auth layer in front. `serve` never does this: there
//! the auth layer sets the header, and an identity a client chooses would let anyone buy
//! as anyone.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The cookie that keeps a browser's demo identity.
pub const DEMO_COOKIE: &str = "flashgate_demo_user";

/// Gives requests without the identity header a demo identity.
pub struct DemoIdentity {
    header: HeaderName,
}

impl DemoIdentity {
    /// Fills `header` (`identity.header`, validated with the config); `None` if it is not
    /// a header name.
    pub fn new(header: &str) -> Option<Self> {
        HeaderName::from_bytes(header.as_bytes())
            .ok()
            .map(|header| Self { header })
    }

    /// Sets the identity header of a request that has none: from the demo cookie, or a new
    /// identity. Returns the `Set-Cookie` to answer with when it made a new one.
    pub fn apply(&self, headers: &mut HeaderMap) -> Option<HeaderValue> {
        if headers.contains_key(&self.header) {
            return None;
        }
        if let Some(id) = cookie(headers).and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(self.header.clone(), id);
            return None;
        }
        let id = format!("demo-{}", &crate::types::OrderId::random().as_str()[..12]);
        let value = HeaderValue::from_str(&id).ok()?;
        headers.insert(self.header.clone(), value);
        HeaderValue::from_str(&format!(
            "{DEMO_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax"
        ))
        .ok()
    }

    /// Adds what [`apply`](Self::apply) returned to the answer.
    pub fn set_cookie(headers: &mut HeaderMap, cookie: HeaderValue) {
        headers.append(SET_COOKIE, cookie);
    }
}

/// The demo cookie's value, if the request carries one this module could have made.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == DEMO_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| {
            v.len() <= 64
                && v.starts_with("demo-")
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_keeps_its_demo_identity_and_a_real_header_wins() {
        let demo = DemoIdentity::new("x-user-id").expect("header name");
        let mut first = HeaderMap::new();
        let set = demo
            .apply(&mut first)
            .expect("a new identity is set in a cookie");
        let id = first["x-user-id"].to_str().expect("ascii").to_owned();
        assert!(id.starts_with("demo-"), "{id}");
        let set = set.to_str().expect("ascii");
        assert!(set.starts_with(&format!("{DEMO_COOKIE}={id};")), "{set}");
        assert!(set.contains("HttpOnly"));

        let mut again = HeaderMap::new();
        again.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {DEMO_COOKIE}={id}")).expect("value"),
        );
        assert!(demo.apply(&mut again).is_none(), "the cookie is reused");
        assert_eq!(again["x-user-id"], id.as_str());

        let mut signed_in = HeaderMap::new();
        signed_in.insert("x-user-id", HeaderValue::from_static("alice"));
        signed_in.insert(
            COOKIE,
            HeaderValue::from_static("flashgate_demo_user=demo-1"),
        );
        assert!(demo.apply(&mut signed_in).is_none());
        assert_eq!(signed_in["x-user-id"], "alice");

        // A cookie it could not have made is not taken as an identity.
        let mut forged = HeaderMap::new();
        forged.insert(
            COOKIE,
            HeaderValue::from_static("flashgate_demo_user=alice"),
        );
        assert!(demo.apply(&mut forged).is_some());
        assert_ne!(forged["x-user-id"], "alice");
    }
}
