//! The path normaliser: any path is normalised or refused, never a panic; normalising twice
//! equals normalising once; and no normalised path the guard lets a POST through to is the
//! order intake, however leniently a backend reads it (with or without NFKC, with
//! combining marks dropped).
#![no_main]
use flashgate::path::{lenient_readings, normalise, reads_as};
use flashgate::proxy::Guard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let Ok(once) = normalise(raw) else {
        return;
    };
    assert_eq!(
        normalise(&once).as_deref(),
        Ok(&*once),
        "not idempotent: {raw:?}"
    );
    let Ok(uri) = once.parse::<http::Uri>() else {
        return;
    };
    let (parts, ()) = http::Request::post(uri)
        .body(())
        .expect("request")
        .into_parts();
    let guard = Guard::new(Some("/orders"));
    if guard.check(&parts, &once).is_ok() {
        for read in lenient_readings(&once) {
            assert!(
                !read.first().is_some_and(|s| reads_as(s, "orders")),
                "{raw:?} reaches the intake (read as {read:?})"
            );
        }
    }
});
