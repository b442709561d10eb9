//! Who is asking: the user id from the configured header, optionally HMAC-signed by the
//! auth layer in front so that a client cannot name someone else.

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;

use crate::config::IdentityConfig;
use crate::error::GatewayError;
use crate::types::UserId;

type HmacSha256 = Hmac<Sha256>;

/// Reads and checks the identity header.
pub struct Identity {
    header: HeaderName,
    key: Option<HmacSha256>,
}

impl Identity {
    /// From `[identity]`; the header name was validated with the config.
    pub fn new(cfg: &IdentityConfig) -> Self {
        let header = HeaderName::from_bytes(cfg.header.as_bytes())
            .unwrap_or_else(|_| HeaderName::from_static("x-user-id"));
        let key = (!cfg.secret.is_empty())
            .then(|| HmacSha256::new_from_slice(cfg.secret.as_bytes()).ok())
            .flatten();
        Self { header, key }
    }

    /// The user a request speaks for: 401 `missing_identity` without the header,
    /// 401 `bad_identity` when it is malformed, repeated, or its signature does not match.
    pub fn user(&self, headers: &HeaderMap) -> Result<UserId, GatewayError> {
        let mut values = headers.get_all(&self.header).iter();
        let value = values.next().ok_or(GatewayError::MissingIdentity)?;
        if values.next().is_some() {
            return Err(GatewayError::BadIdentity);
        }
        let text = value.to_str().map_err(|_| GatewayError::BadIdentity)?;
        let user = match &self.key {
            None => text,
            Some(key) => {
                let (user, sig) = text.rsplit_once('.').ok_or(GatewayError::BadIdentity)?;
                let sig = hex::decode(sig).map_err(|_| GatewayError::BadIdentity)?;
                let mut mac = key.clone();
                mac.update(user.as_bytes());
                // verify_slice compares in constant time.
                mac.verify_slice(&sig)
                    .map_err(|_| GatewayError::BadIdentity)?;
                user
            }
        };
        UserId::parse(user).ok_or(GatewayError::BadIdentity)
    }
}

/// Signs a user id the way [`Identity`] expects (`user.hexsig`); for the auth layer, the
/// demo and tests.
pub fn sign(secret: &str, user: &str) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return user.to_owned(),
    };
    mac.update(user.as_bytes());
    format!("{user}.{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-user-id",
            HeaderValue::from_bytes(v).expect("header value"),
        );
        h
    }

    fn code(r: Result<UserId, GatewayError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.code())
    }

    #[test]
    fn plain_identity() {
        let id = Identity::new(&IdentityConfig::default());
        assert_eq!(code(id.user(&headers(b"alice"))), "ok");
        assert_eq!(code(id.user(&HeaderMap::new())), "missing_identity");
        assert_eq!(code(id.user(&headers(b"a b"))), "bad_identity");
        assert_eq!(code(id.user(&headers(b"\xff\xfe"))), "bad_identity");
        let mut twice = headers(b"alice");
        twice.append("x-user-id", HeaderValue::from_static("bob"));
        assert_eq!(code(id.user(&twice)), "bad_identity");
    }

    #[test]
    fn signed_identity_refuses_forgeries() {
        let cfg = IdentityConfig {
            secret: "s3cret".into(),
            ..IdentityConfig::default()
        };
        let id = Identity::new(&cfg);
        let good = sign("s3cret", "alice");
        assert_eq!(
            id.user(&headers(good.as_bytes()))
                .map(|u| u.to_string())
                .ok(),
            Some("alice".to_owned())
        );
        let forged = sign("other", "alice");
        assert_eq!(code(id.user(&headers(forged.as_bytes()))), "bad_identity");
        let swapped = good.replacen("alice", "mallory", 1);
        assert_eq!(code(id.user(&headers(swapped.as_bytes()))), "bad_identity");
        assert_eq!(code(id.user(&headers(b"alice"))), "bad_identity");
        assert_eq!(code(id.user(&headers(b"alice.zz"))), "bad_identity");
    }
}
