//! Request paths: any path is a sale route or proxied, never a panic; a sale route's sku
//! and ticket are slices of the path itself.
#![no_main]
use flashgate::sale_api::Route;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    match Route::of(path) {
        Some(Route::Sale(s) | Route::Token(s) | Route::Order(s) | Route::Wait(s)) => {
            assert!(path.contains(s));
            assert!(!s.contains('/'));
        }
        Some(Route::Ticket(t)) => assert!(path.ends_with(t) && !t.contains('/')),
        Some(Route::Busy | Route::Unnormalised) | None => {}
    }
});
