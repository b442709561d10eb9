//! The order request: header token and JSON body. Any input gives a token and a quantity
//! within the limit, or a 400 `bad_request`.
#![no_main]
use flashgate::sale_api::order_body::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Option<Vec<u8>>, Vec<u8>, u8)| {
    let (header, body, limit) = input;
    let limit = u32::from(limit.max(1));
    match parse(header.as_deref(), &body, limit) {
        Ok((_, quantity)) => assert!((1..=limit).contains(&quantity)),
        Err(e) => assert_eq!(e.code(), "bad_request"),
    }
});
