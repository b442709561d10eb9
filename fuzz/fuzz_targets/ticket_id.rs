//! Ticket ids from `/sale/tickets/{id}` and the waiting room's `?ticket=`: any text parses
//! to an id or to nothing, and a parsed id prints back as the same text, lower-cased.
#![no_main]
use flashgate::types::TicketId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = TicketId::parse(text) {
        assert_eq!(id.to_string(), text.to_ascii_lowercase());
    }
});
