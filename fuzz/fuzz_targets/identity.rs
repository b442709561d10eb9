//! The identity header, plain and HMAC-signed: any bytes give a user or a refusal, never a
//! panic; a signed identity is accepted only for the user it was signed for.
#![no_main]
use flashgate::config::IdentityConfig;
use flashgate::identity::{sign, Identity};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-user-id", value);
    let plain = Identity::new(&IdentityConfig::default());
    let _ = plain.user(&headers);
    let signed = Identity::new(&IdentityConfig {
        secret: "fuzz-secret".into(),
        ..IdentityConfig::default()
    });
    if let Ok(user) = signed.user(&headers) {
        // Only a real signature passes: the header must be exactly what sign() makes.
        let expected = sign("fuzz-secret", user.as_str());
        assert_eq!(expected.as_bytes(), data);
    }
});
