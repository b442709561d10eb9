//! Sale tokens from the `X-Sale-Token` header or the order body: any text parses to a
//! token or to nothing, and a parsed token prints back as the same text, lower-cased.
#![no_main]
use flashgate::types::Token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(token) = Token::parse(text) {
        assert_eq!(token.to_string(), text.to_ascii_lowercase());
    }
});
