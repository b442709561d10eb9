//! The config file and `--set` overrides: any text is a valid config or an error naming a
//! key, never a panic.
#![no_main]
use flashgate::config::{Config, Override};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, Option<String>)| {
    let (text, flag) = input;
    let overrides: Vec<Override> = flag
        .as_deref()
        .and_then(|f| Override::from_flag(f).ok())
        .into_iter()
        .collect();
    if let Ok(config) = Config::from_toml(&text, "fuzz", &overrides) {
        // What a valid config prints must itself be a valid config.
        let printed = config.to_toml();
        let _ = Config::from_toml(&printed, "fuzz printed", &[]);
    }
});
