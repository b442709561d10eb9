//! `Flashgate-Signature`: how the backend tells the deliverer's orders from anyone else's.
//!
//! The path guard keeps clients' writes off the order intake, but a guard in front of a
//! backend can only guess how that backend reads paths. With `delivery.signing_secret` set,
//! every delivery carries `Flashgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>` (the scheme payment webhooks use), and a backend that verifies it accepts
//! only orders the gateway made, whatever path tricks a client tries. The timestamp bounds
//! replays of a captured delivery to the verifier's tolerance (and the Idempotency-Key makes
//! a replay within it harmless).

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header's name.
pub static FLASHGATE_SIGNATURE: HeaderName = HeaderName::from_static("flashgate-signature");

/// Why a verifier refuses a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Flashgate-Signature` header, or more than one.
    #[error("the Flashgate-Signature header is missing or repeated")]
    Missing,
    /// The header is not `t=<seconds>,v1=<hex>`.
    #[error("the Flashgate-Signature header is malformed")]
    Malformed,
    /// The timestamp is further from now than the tolerance.
    #[error("the Flashgate-Signature timestamp is outside the tolerance")]
    Stale,
    /// No `v1` signature matches the body under the secret.
    #[error("the Flashgate-Signature does not match the body")]
    Mismatch,
}

/// Signs and verifies deliveries under one shared secret.
#[derive(Clone)]
pub struct Signer {
    key: HmacSha256,
}

impl Signer {
    /// A signer for `secret`; None for an empty secret (signing off).
    pub fn new(secret: &str) -> Option<Self> {
        if secret.is_empty() {
            return None;
        }
        HmacSha256::new_from_slice(secret.as_bytes())
            .ok()
            .map(|key| Self { key })
    }

    fn mac(&self, t: u64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The header value for `body` sent at `t` (unix seconds).
    pub fn sign(&self, t: u64, body: &[u8]) -> HeaderValue {
        let sig = hex::encode(self.mac(t, body).finalize().into_bytes());
        // Digits, letters, `=` and `,` only: always a valid header value.
        HeaderValue::from_str(&format!("t={t},v1={sig}"))
            .unwrap_or_else(|_| HeaderValue::from_static("t=0,v1=0"))
    }

    /// Ok when `value` signs `body` under this secret with a timestamp within `tolerance`
    /// of `now` (unix seconds). Several `v1=` entries are allowed (one per secret during a
    /// rotation); one match suffices. Compares in constant time.
    pub fn verify(
        &self,
        value: Option<&HeaderValue>,
        body: &[u8],
        now: u64,
        tolerance: Duration,
    ) -> Result<(), SignatureError> {
        let text = value
            .ok_or(SignatureError::Missing)?
            .to_str()
            .map_err(|_| SignatureError::Malformed)?;
        let mut t = None;
        let mut sigs = Vec::new();
        for item in text.split(',') {
            match item.trim().split_once('=') {
                Some(("t", v)) if t.is_none() => {
                    t = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?);
                }
                Some(("v1", v)) => {
                    sigs.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?);
                }
                // Other schemes are for other verifiers.
                Some((k, _)) if k != "t" => {}
                _ => return Err(SignatureError::Malformed),
            }
        }
        let t = t.ok_or(SignatureError::Malformed)?;
        if sigs.is_empty() {
            return Err(SignatureError::Malformed);
        }
        if now.abs_diff(t) > tolerance.as_secs() {
            return Err(SignatureError::Stale);
        }
        let mac = self.mac(t, body);
        if sigs.iter().any(|s| mac.clone().verify_slice(s).is_ok()) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn the_documented_test_vector() {
        // The vector of docs/sale-path.md: a backend in any language checks itself against it.
        let s = Signer::new("whsec_test").expect("signer");
        let body = br#"{"order_id":"0123456789abcdef0123456789abcdef","sku":"phone","user_id":"alice","quantity":1}"#;
        let v = s.sign(1_767_225_600, body);
        assert_eq!(
            v.to_str().expect("text"),
            "t=1767225600,v1=b7c64cea20545c8b3bc30fde96ff7af4ff94c10551086d97fb7f5b8a871eb906"
        );
    }

    #[test]
    fn only_a_fresh_signature_of_this_body_under_this_secret_passes() {
        let s = Signer::new("k").expect("signer");
        let v = s.sign(1000, b"body");
        assert_eq!(s.verify(Some(&v), b"body", 1000, TOL), Ok(()));
        assert_eq!(s.verify(Some(&v), b"body", 1300, TOL), Ok(()));
        assert_eq!(
            s.verify(Some(&v), b"body", 1301, TOL),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            s.verify(Some(&v), b"bodx", 1000, TOL),
            Err(SignatureError::Mismatch)
        );
        let other = Signer::new("other").expect("signer");
        assert_eq!(
            other.verify(Some(&v), b"body", 1000, TOL),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            s.verify(None, b"body", 1000, TOL),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "t=1000",
            "v1=00",
            "t=x,v1=00",
            "t=1000,v1=zz",
            "garbage",
        ] {
            let v = HeaderValue::from_static(bad);
            assert_eq!(
                s.verify(Some(&v), b"body", 1000, TOL),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        // A rotation: the old secret's signature beside the new one.
        let both = format!("{},v1={}", v.to_str().expect("text"), "00".repeat(32));
        let both = HeaderValue::from_str(&both).expect("value");
        assert_eq!(s.verify(Some(&both), b"body", 1000, TOL), Ok(()));
        assert!(Signer::new("").is_none());
    }
}
